"""Web chat: the customer side of Socket.IO, visitor tokens and identity verification."""
