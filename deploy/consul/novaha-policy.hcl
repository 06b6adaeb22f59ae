# Least-privilege Consul ACL policy for the novaha daemon's token.
# Create it with:
#   consul acl policy create -name novaha -rules @novaha-policy.hcl
#   consul acl token create -description "novaha daemon" -policy-name novaha
# and give the token to novaha as [consul] token or CONSUL_HTTP_TOKEN.

# The whole state tree: the leader lock, nodes' flags, records, the outbox.
key_prefix "ha_cluster/" {
  policy = "write"
}

# Sessions are created on the agent's own node (leader election).
session_prefix "" {
  policy = "write"
}

# Register and pass the daemon's own TTL check on the local agent, and read
# the compute nodes' health checks (the `consul` monitor signal).
node_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "read"
}
agent_prefix "" {
  policy = "read"
}
