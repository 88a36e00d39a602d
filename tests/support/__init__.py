"""Helpers the tests share, none of them a test or a fixture: a local HTTP server standing in for a
SaaS webhook (`httpcapture`), real PostgreSQL sessions of every kind (`sessions`), the drills'
Supabase-shaped database (`supabase`), and a free local port (`ports`). The fixtures stay in the
conftest.py files."""
