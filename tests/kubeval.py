"""Validates Kubernetes manifests offline for tests/deploy.rs, with kubernetes-validate's bundled schemas.

    python kubeval.py VERSIONS SOURCE...

VERSIONS: Kubernetes versions separated by commas (e.g. 1.30,1.37); SOURCE: a YAML file, or - for stdin
(what `kubectl kustomize` renders). Every document is checked against the strict schema of each version
(an unknown field is an error), and a document whose kind/apiVersion has no schema is an error too (the
kubernetes-validate command only warns about that, which would let a misspelt kind pass).

Prints {"documents": [{"source": ..., "document": {...}}, ...]} on stdout, so the test can check the
manifests against each other without a YAML parser of its own; every problem goes to stderr, and the exit
status is 1 if there was any.
"""

import json
import sys

import kubernetes_validate
import kubernetes_validate.utils as kv
import yaml


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    versions = sys.argv[1].split(",")
    problems = []
    documents = []
    for source in sys.argv[2:]:
        text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            name = "%s %s/%s" % (source, doc.get("kind"), (doc.get("metadata") or {}).get("name"))
            for version in versions:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kv.ValidationError as e:
                    path = ".".join(str(p) for p in e.path)
                    problems.append("%s: Kubernetes %s: %s: %s" % (name, version, path, e.message))
                except (kv.SchemaNotFoundError, kv.InvalidSchemaError, kv.VersionNotSupportedError) as e:
                    problems.append("%s: Kubernetes %s: %s" % (name, version, e.message))
                else:
                    print("valid: %s (Kubernetes %s, strict)" % (name, version), file=sys.stderr)
            documents.append({"source": source, "document": doc})
    for p in problems:
        print("INVALID: " + p, file=sys.stderr)
    json.dump({"documents": documents}, sys.stdout)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
