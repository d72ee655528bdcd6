"""SMS providers: one module per provider (twilio.py), each an SmsProvider."""
