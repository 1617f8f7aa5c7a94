// Command controlplane runs a real, minimal Kubernetes control plane for the
// dcu-dra tests and the local demo: embedded etcd (in this process) plus
// kube-apiserver, kube-scheduler and kube-controller-manager from
// k8s.io/kubernetes, each run as a child process of this same binary
// ("controlplane apiserver|scheduler|controller-manager <upstream flags>").
//
// See README.md for the contract.
package main

import (
	"dcu-dra/tests/controlplane/internal/kubeversion"
	"flag"
	"fmt"
	"os"
	"runtime"
	_ "time/tzdata" // as upstream: CronJob time zones in kube-controller-manager

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	schedulerapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	if len(os.Args) > 1 {
		kubeversion.Set()
		switch os.Args[1] {
		case "apiserver":
			os.Exit(runUpstream(apiserverapp.NewAPIServerCommand()))
		case "scheduler":
			os.Exit(runUpstream(schedulerapp.NewSchedulerCommand()))
		case "controller-manager":
			os.Exit(runUpstream(kcmapp.NewControllerManagerCommand()))
		case "feature-gates":
			os.Exit(printFeatureGates(os.Args[2:]))
		}
	}

	// Children are started from this goroutine; keep it on the main OS
	// thread so that Pdeathsig (tied to the forking thread) only fires when
	// the whole process dies.
	runtime.LockOSThread()

	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	var opts options
	fs.StringVar(&opts.dataDir, "data-dir", "", "directory for certificates, etcd data, kubeconfigs and logs (created with mode 0700; reused on restart)")
	fs.StringVar(&opts.kubeconfig, "kubeconfig", "", "where to write the admin kubeconfig (mode 0600)")
	fs.IntVar(&opts.port, "port", 0, "kube-apiserver secure port on 127.0.0.1 (0: pick a free port)")
	fs.StringVar(&opts.auditLog, "audit-log", "", "write kube-apiserver's audit log (JSON lines, one event per request stage, Metadata level) to this file (empty: no audit log)")
	var gatesOff string
	fs.StringVar(&gatesOff, "feature-gates-off", "", "comma-separated feature gates of ours to turn off (a cluster without them)")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s --data-dir DIR --kubeconfig FILE [--port N] [--audit-log FILE] [--feature-gates-off=A,B]\n       %s feature-gates [--feature-gates-off=A,B]\n", os.Args[0], os.Args[0])
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if opts.dataDir == "" || opts.kubeconfig == "" || fs.NArg() != 0 || opts.port < 0 || opts.port > 65535 {
		fs.Usage()
		os.Exit(2)
	}
	opts.gatesOff = splitGates(gatesOff)
	if err := checkGatesOff(opts.gatesOff); err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(2)
	}
	os.Exit(supervise(opts))
}

// runUpstream runs an upstream cobra command with the arguments after the
// sub-command name.
func runUpstream(cmd *cobra.Command) int {
	cmd.SetArgs(os.Args[2:])
	return cli.Run(cmd)
}
