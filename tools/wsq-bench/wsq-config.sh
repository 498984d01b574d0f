# Sourced by tools/bench-peers.sh and tools/wsq-bench/run-wsq.sh (POSIX sh).
# wsq_config DIR PORT [SYNC]: prints the wsq.yaml of a benchmark broker on 127.0.0.1:PORT (0: any)
# with its store in DIR/data and storage.sync SYNC (default full). Anonymous clients may do
# everything; the token "benchpub" may only publish, so that raw-mode publishers do not receive
# their own topic.
wsq_config() {
    _sha=$(printf %s benchpub | sha256sum | cut -d' ' -f1)
    cat <<CONF
listeners:
  - address: 127.0.0.1
    port: $2
storage:
  path: $1/data
  sync: ${3:-full}
limits:
  max_connections: 0
auth:
  anonymous:
    publish: [">"]
    subscribe: [">"]
    admin: true
  tokens:
    - name: benchpub
      sha256: $_sha
      publish: [">"]
      subscribe: []
CONF
}
