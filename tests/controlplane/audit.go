package main

import (
	"fmt"
	"os"
	"path/filepath"
)

// auditPolicy records every request at Metadata level (user, user agent, verb,
// resource, response code; no bodies) and skips the RequestReceived stage, so a
// request is one ResponseComplete event (a watch also has ResponseStarted when
// its stream opens). Bodies would make the log far larger and are not needed to
// count requests per client.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
`

// auditFlags writes the audit policy into the data directory and returns the
// kube-apiserver flags that log to logPath as JSON lines, synchronously
// ("blocking" mode: an event is on disk when the request returns), never
// rotated, so a reader sees every request.
func auditFlags(dataDir, logPath string) ([]string, error) {
	abs, err := filepath.Abs(logPath)
	if err != nil {
		return nil, fmt.Errorf("audit log path %q: %w", logPath, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("creating the audit log's directory: %w", err)
	}
	policy := filepath.Join(dataDir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		return nil, fmt.Errorf("writing %s: %w", policy, err)
	}
	return []string{
		"--audit-policy-file=" + policy,
		"--audit-log-path=" + abs,
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		"--audit-log-maxsize=0",
		"--audit-log-maxbackup=0",
	}, nil
}
