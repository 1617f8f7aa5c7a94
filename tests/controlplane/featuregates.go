package main

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/component-base/featuregate"
)

// wantedFeatureGates are turned on in kube-apiserver, kube-scheduler,
// kube-controller-manager and (through `controlplane feature-gates`) the real
// kubelet. In 1.36 they are all beta and on by default; in 1.34 and 1.35
// DRAConsumableCapacity and DRADeviceTaints are alpha and off, and without
// them the API server drops the sharing fields and taints from slices. They
// are listed explicitly so that the test cluster does not silently change
// when a default flips.
var wantedFeatureGates = []string{
	"DRAConsumableCapacity",
	"DRAPartitionableDevices",
	"DRADeviceTaints",
	"DRADeviceBindingConditions",
	"DRAExtendedResource",
	"DRAResourceClaimDeviceStatus",
	"DRAResourceClaimGranularStatusAuthorization",
	"DRASchedulerFilterTimeout",
	"ResourceHealthStatus",
	"ResourceHealthStatusMessage",
}

// featureGateSettings returns the wanted gates this build can set, as
// "A=true,B=true", and the ones it leaves out with why. One source tree
// builds every Kubernetes version (versions/), and each version knows its
// own gates: a gate it does not know yet (or any more) would make every
// component refuse to start, and a gate locked to its default (GA, e.g.
// DRAResourceClaimDeviceStatus in 1.37) cannot be set and is on anyway.
//
// The gates in off are set to false instead (--feature-gates-off): a cluster
// without them, as a user's may be.
func featureGateSettings(off []string) (string, []string) {
	known := utilfeature.DefaultMutableFeatureGate.GetAll()
	var set, skipped []string
	for _, name := range wantedFeatureGates {
		spec, ok := known[featuregate.Feature(name)]
		switch {
		case !ok:
			skipped = append(skipped, name+": unknown in this version")
		case spec.LockToDefault:
			skipped = append(skipped, fmt.Sprintf("%s: locked to %t", name, spec.Default))
		case slices.Contains(off, name):
			set = append(set, name+"=false")
		default:
			set = append(set, name+"=true")
		}
	}
	sort.Strings(set)
	return strings.Join(set, ","), skipped
}

// featureGates is what the components get as --feature-gates.
func featureGates(off []string) string {
	gates, _ := featureGateSettings(off)
	return gates
}

// runtimeConfig is the API server's --runtime-config for the gates set, or
// "". In 1.34 DRADeviceTaints alone (there is no DRADeviceTaintRules gate yet)
// makes kube-scheduler and the controller manager watch DeviceTaintRules, which
// exist only in resource.k8s.io/v1alpha3, an API the server does not serve by
// default: the scheduler then never syncs its informers and never becomes
// ready. From 1.35 on the rules have their own gate, which we do not set.
func runtimeConfig(off []string) string {
	known := utilfeature.DefaultMutableFeatureGate.GetAll()
	_, hasRulesGate := known[featuregate.Feature("DRADeviceTaintRules")]
	taints, hasTaints := known[featuregate.Feature("DRADeviceTaints")]
	if hasRulesGate || !hasTaints || taints.Default || slices.Contains(off, "DRADeviceTaints") {
		return ""
	}
	return "resource.k8s.io/v1alpha3=true"
}

// printFeatureGates is `controlplane feature-gates [--feature-gates-off=A,B]`:
// the gates on one line (for the kubelet of the same version), then one line
// per gate left out.
func printFeatureGates(args []string) int {
	var off []string
	for _, arg := range args {
		value, ok := strings.CutPrefix(arg, "--feature-gates-off=")
		if !ok {
			fmt.Fprintf(os.Stderr, "usage: controlplane feature-gates [--feature-gates-off=A,B] (not %q)\n", arg)
			return 2
		}
		off = append(off, splitGates(value)...)
	}
	gates, skipped := featureGateSettings(off)
	fmt.Println(gates)
	for _, why := range skipped {
		fmt.Println("# " + why)
	}
	return 0
}

// splitGates reads "A,B" (spaces and empty items ignored).
func splitGates(value string) []string {
	var names []string
	for _, name := range strings.Split(value, ",") {
		if name = strings.TrimSpace(name); name != "" {
			names = append(names, name)
		}
	}
	return names
}

// checkGatesOff refuses a gate to turn off that is not one of ours: a typo
// would otherwise leave the gate on without a word.
func checkGatesOff(off []string) error {
	for _, name := range off {
		if !slices.Contains(wantedFeatureGates, name) {
			return fmt.Errorf("--feature-gates-off=%s: not one of the gates the control plane sets (%s)", name, strings.Join(wantedFeatureGates, ", "))
		}
	}
	return nil
}
