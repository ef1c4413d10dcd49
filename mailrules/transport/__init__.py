"""Connections shared by IMAP and POP3: verified TLS, required STARTTLS, command tunnels."""
