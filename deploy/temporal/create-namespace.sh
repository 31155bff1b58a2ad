#!/bin/sh
# Register the namespace the workers use (the server no longer creates one itself) and
# BeesTown's search attributes in it (workflows/search.py: an unregistered one would fail
# every workflow task that upserts it). Idempotent: an existing namespace is left as it
# is (retention included), existing attributes too.
set -eu

: "${TEMPORAL_ADDRESS:?}" "${TEMPORAL_NAMESPACE:?}"
retention="${NAMESPACE_RETENTION:-72h}"

# The healthcheck only proves the port is open; the frontend may still be joining the ring.
attempt=0
until temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 30 ]; then
    echo "namespace: server at $TEMPORAL_ADDRESS not healthy after 60s" >&2
    exit 1
  fi
  sleep 2
done

if temporal operator namespace describe --address "$TEMPORAL_ADDRESS" \
    --namespace "$TEMPORAL_NAMESPACE" >/dev/null 2>&1; then
  echo "namespace: $TEMPORAL_NAMESPACE exists"
else
  temporal operator namespace create --address "$TEMPORAL_ADDRESS" \
    --namespace "$TEMPORAL_NAMESPACE" --retention "$retention"
  echo "namespace: $TEMPORAL_NAMESPACE created (retention $retention)"
fi

# Keep in step with workflows/search.py.
for name in BeesTownStatus BeesTownAssignee BeesTownPriority BeesTownProject; do
  if temporal operator search-attribute list --address "$TEMPORAL_ADDRESS" \
      --namespace "$TEMPORAL_NAMESPACE" 2>/dev/null | grep -q "$name"; then
    echo "search attribute: $name exists"
  else
    temporal operator search-attribute create --address "$TEMPORAL_ADDRESS" \
      --namespace "$TEMPORAL_NAMESPACE" --name "$name" --type Keyword
    echo "search attribute: $name created"
  fi
done
