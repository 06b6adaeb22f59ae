# Least-privilege Consul ACL policy for one novaha daemon's token.
# It names the daemon's own Consul agent node: replace @NODE@ with that
# agent's node name (`consul info | grep node_name`, or the agent's
# -node), one policy and token per controller:
#   sed "s/@NODE@/$(hostname -s)/g" novaha-policy.hcl > novaha-$(hostname -s).hcl
#   consul acl policy create -name novaha-$(hostname -s) -rules @novaha-$(hostname -s).hcl
#   consul acl token create -description "novaha daemon" -policy-name novaha-$(hostname -s)
# and give the token to novaha as [consul] token_file or CONSUL_HTTP_TOKEN_FILE.
# If you use another [consul] prefix, change "ha_cluster/" below to match.

# The whole state tree: the leader lock, nodes' flags, records, the outbox.
key_prefix "ha_cluster/" {
  policy = "write"
}

# Its own TTL check on its own agent, and the sessions bound to it
# (leader election): write on this node only.
node "@NODE@" {
  policy = "write"
}
session "@NODE@" {
  policy = "write"
}
# Its agent's own configuration (agent/self: check-config names the node).
agent "@NODE@" {
  policy = "read"
}

# The compute nodes' health checks (the `consul` monitor signal): read only.
node_prefix "" {
  policy = "read"
}
service_prefix "" {
  policy = "read"
}

# BMC credentials kept out of the operator-writable tree ([fence]
# credentials_prefix = "novaha_bmc", docs/fencing.md): the daemon reads
# them, operators' tokens get no rule for them. Uncomment when used.
# key_prefix "novaha_bmc/" {
#   policy = "read"
# }
