"""Session recordings in Supabase Storage: the bucket (client), short-lived links
(links), and the expiry that deletes (expiry)."""
