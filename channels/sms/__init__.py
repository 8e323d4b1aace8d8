"""SMS and WhatsApp through Twilio: segment counting, the signed webhooks and the sending channel."""
