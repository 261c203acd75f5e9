"""``leadflow sim``: a local stand-in for the paid provider APIs, over real HTTP and SMTP."""
