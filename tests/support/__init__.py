"""What the tests share: helpers, fixtures' building blocks and the servers they start. No test
module imports another; they all import from here."""
