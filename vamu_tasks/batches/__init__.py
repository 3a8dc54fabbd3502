"""The batch tier: jobs that can wait go to the vendors' half-price batch APIs."""
