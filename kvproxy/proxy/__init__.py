"""The RESP proxy: sessions, links to the upstream, and KVCLOUD dispatch."""
