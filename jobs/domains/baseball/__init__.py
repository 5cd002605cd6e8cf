"""The example domain: a baseball hitting assistant over synthetic data (data/baseball/)."""
