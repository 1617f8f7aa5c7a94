// Package kubeversion makes the control plane's and the kubelet's binaries
// report the k8s.io/kubernetes version they were built from; both mains call
// Set first.
package kubeversion

import (
	"runtime/debug"
	"strings"
	_ "unsafe" // for go:linkname

	_ "k8s.io/client-go/pkg/version" // its variables are set below
	"k8s.io/component-base/version"
)

// Upstream release builds set the version with -ldflags -X; `go build` in
// this module (make controlplane) cannot, and /version would then report
// "v0.0.0-master+$Format:%H$". Fill the same variables at start-up from the
// k8s.io/kubernetes version this binary was built with (go.mod), so clients
// see e.g. v1.36.3. Feature gates do not depend on this (they use
// version.DefaultKubeBinaryVersion).

//go:linkname gitMajor k8s.io/component-base/version.gitMajor
var gitMajor string

//go:linkname gitMinor k8s.io/component-base/version.gitMinor
var gitMinor string

//go:linkname gitVersion k8s.io/component-base/version.gitVersion
var gitVersion string

//go:linkname gitCommit k8s.io/component-base/version.gitCommit
var gitCommit string

//go:linkname gitTreeState k8s.io/component-base/version.gitTreeState
var gitTreeState string

// kubectl's client version is client-go's own copy of the same variables.

//go:linkname clientGitMajor k8s.io/client-go/pkg/version.gitMajor
var clientGitMajor string

//go:linkname clientGitMinor k8s.io/client-go/pkg/version.gitMinor
var clientGitMinor string

//go:linkname clientGitVersion k8s.io/client-go/pkg/version.gitVersion
var clientGitVersion string

//go:linkname clientGitTreeState k8s.io/client-go/pkg/version.gitTreeState
var clientGitTreeState string

// kubeVersion returns the version of the k8s.io/kubernetes module in the
// build, or "" if unknown.
func kubeVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, dep := range bi.Deps {
		if dep.Path == "k8s.io/kubernetes" {
			return dep.Version
		}
	}
	// kubectl does not link k8s.io/kubernetes; its staging modules are
	// versioned v0.<minor>.<patch> for Kubernetes v1.<minor>.<patch>.
	for _, dep := range bi.Deps {
		if dep.Path == "k8s.io/client-go" && dep.Replace != nil {
			if rest, ok := strings.CutPrefix(dep.Replace.Version, "v0."); ok {
				return "v1." + rest
			}
		}
	}
	return ""
}

// Set fills component-base's and client-go's version variables from the build's
// k8s.io/kubernetes module version (nothing when it is unknown).
func Set() {
	v := kubeVersion()
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) != 3 {
		return
	}
	gitMajor, gitMinor, gitVersion = parts[0], parts[1], v
	gitCommit, gitTreeState = "", "clean"
	clientGitMajor, clientGitMinor, clientGitVersion = parts[0], parts[1], v
	clientGitTreeState = "clean"
	_ = version.SetDynamicVersion(v) // a no-op check now that gitVersion == v
}
