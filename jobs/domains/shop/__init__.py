"""The shop-support example domain: order status and return policies of an online store."""
