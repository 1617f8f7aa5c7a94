// Command kubelet is the upstream kubelet of k8s.io/kubernetes (the same code
// as k8s.io/kubernetes/cmd/kubelet), built from the control plane's module
// (../go.mod: k8s.io/kubernetes v1.36.3 with a replace for every staging
// module), so it shares the control plane's versions and build cache.
// `make kubelet` builds it into build/bin/node/kubelet; see ../README.md.
package main

import (
	"context"
	"dcu-dra/tests/controlplane/internal/kubeversion"
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // for client metric registration
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	kubeversion.Set()
	command := app.NewKubeletCommand(context.Background())
	code := cli.Run(command)
	os.Exit(code)
}
