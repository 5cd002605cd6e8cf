"""The visa desk: an example agent of two prompts (router, responder) for promptgate, kept outside its tree."""
