// Command kubectl is the upstream kubectl (k8s.io/kubectl, as
// k8s.io/kubernetes/cmd/kubectl runs it), built from the control plane's module
// so its version is the cluster's. `make kubectl` builds it into
// build/bin/kubectl, for `make demo KEEP=1` and the README's "Try it".
package main

import (
	"dcu-dra/tests/controlplane/internal/kubeversion"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	kubeversion.Set()
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
