"""The email channel: parsing, IMAP in, SMTP out."""
