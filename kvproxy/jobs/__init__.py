"""Backup and restore work as jobs: progress, outcome, and a record that outlives the proxy."""
