"""Everything that talks to the server behind the proxy, other than forwarding."""
