"""Helpers the tests share, none of them a test or a fixture: a local HTTP server standing in for a
SaaS webhook (`httpcapture`), real PostgreSQL sessions of every kind (`sessions`), the drills'
Supabase-shaped database (`supabase`), a free local port (`ports`), the drills' backend app in a
container (`backend`), and the types of the incident worlds the fixtures make (`worlds`). The
fixtures stay in the conftest.py files."""
