package main

import (
	"fmt"
	"strings"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// report is the JSON document cdi-inject prints. Lists keep the order the library left them
// in; an empty list is [] and a missing number null.
type report struct {
	DeviceNodes  []deviceNode      `json:"deviceNodes"`
	DeviceCgroup []deviceCgroup    `json:"deviceCgroup"`
	Mounts       []mount           `json:"mounts"`
	Env          []string          `json:"env"`
	Hooks        map[string][]hook `json:"hooks"`
	Conflicts    []conflict        `json:"conflicts"`
}

type deviceNode struct {
	Path     string  `json:"path"`
	Type     string  `json:"type"`
	Major    int64   `json:"major"`
	Minor    int64   `json:"minor"`
	FileMode *uint32 `json:"fileMode"`
	UID      *uint32 `json:"uid"`
	GID      *uint32 `json:"gid"`
	// HostPath is not in the OCI spec: it is the hostPath of the CDI edit that put Path in
	// the container (the path itself when the edit named none, as the library fills it in).
	HostPath string `json:"hostPath"`
	// CDIID is the injected ID whose edit that was (not in the OCI spec either).
	CDIID string `json:"cdiId"`
}

type deviceCgroup struct {
	Allow  bool   `json:"allow"`
	Type   string `json:"type"`
	Major  *int64 `json:"major"`
	Minor  *int64 `json:"minor"`
	Access string `json:"access"`
}

type mount struct {
	Destination string   `json:"destination"`
	Source      string   `json:"source"`
	Type        string   `json:"type"`
	Options     []string `json:"options"`
	// CDIID is the injected ID whose edit put the mount there (not in the OCI spec).
	CDIID string `json:"cdiId"`
}

type hook struct {
	Path    string   `json:"path"`
	Args    []string `json:"args"`
	Env     []string `json:"env"`
	Timeout *int     `json:"timeout"`
}

// conflict is one env variable, mount destination or device node path that two injected IDs
// set to different values; the library applies the later one without a word.
type conflict struct {
	What   string          `json:"what"`
	Key    string          `json:"key"`
	Values []conflictValue `json:"values"`
}

type conflictValue struct {
	CDIID string `json:"cdiId"`
	Value string `json:"value"`
}

// deviceEdits are the edits one injected ID brings: its spec's spec-level edits, then its own.
type deviceEdits struct {
	id     string
	spec   *cdi.Spec
	device *cdi.Device
}

func (d deviceEdits) all() []*cdispec.ContainerEdits {
	return []*cdispec.ContainerEdits{&d.spec.ContainerEdits, &d.device.ContainerEdits}
}

// effectiveEdits looks up every (resolved) ID in the cache, in injection order.
func effectiveEdits(cache *cdi.Cache, ids []string) []deviceEdits {
	edits := make([]deviceEdits, 0, len(ids))
	for _, id := range ids {
		device := cache.GetDevice(id)
		edits = append(edits, deviceEdits{id: id, spec: device.GetSpec(), device: device})
	}
	return edits
}

// origin is the CDI edit that put a device node or a mount in the container.
type origin struct {
	id       string
	hostPath string
}

// origins finds, for each container device path and mount destination, the edit that put it
// there last, following Cache.InjectDevices: a spec's spec-level edits once, before its first
// device's own edits; a later node or mount for a path replaces the earlier one.
func origins(edits []deviceEdits) (nodes map[string]origin, mounts map[string]origin) {
	nodes, mounts = map[string]origin{}, map[string]origin{}
	seenSpecs := map[*cdi.Spec]bool{}
	for _, e := range edits {
		lists := []*cdispec.ContainerEdits{&e.device.ContainerEdits}
		if !seenSpecs[e.spec] {
			seenSpecs[e.spec] = true
			lists = e.all()
		}
		for _, list := range lists {
			for _, node := range list.DeviceNodes {
				nodes[node.Path] = origin{id: e.id, hostPath: hostPathOf(node)}
			}
			for _, m := range list.Mounts {
				mounts[m.ContainerPath] = origin{id: e.id, hostPath: m.HostPath}
			}
		}
	}
	return nodes, mounts
}

func hostPathOf(node *cdispec.DeviceNode) string {
	if node.HostPath == "" {
		return node.Path
	}
	return node.HostPath
}

func newReport(spec *oci.Spec, edits []deviceEdits) report {
	r := report{
		DeviceNodes:  []deviceNode{},
		DeviceCgroup: []deviceCgroup{},
		Mounts:       []mount{},
		Env:          []string{},
		Hooks:        map[string][]hook{},
		Conflicts:    findConflicts(edits),
	}
	nodeOrigins, mountOrigins := origins(edits)
	if spec.Linux != nil {
		for _, d := range spec.Linux.Devices {
			node := deviceNode{
				Path: d.Path, Type: d.Type, Major: d.Major, Minor: d.Minor,
				UID: d.UID, GID: d.GID,
				HostPath: nodeOrigins[d.Path].hostPath, CDIID: nodeOrigins[d.Path].id,
			}
			if d.FileMode != nil {
				mode := uint32(*d.FileMode)
				node.FileMode = &mode
			}
			r.DeviceNodes = append(r.DeviceNodes, node)
		}
		if spec.Linux.Resources != nil {
			for _, c := range spec.Linux.Resources.Devices {
				r.DeviceCgroup = append(r.DeviceCgroup, deviceCgroup{
					Allow: c.Allow, Type: c.Type, Major: c.Major, Minor: c.Minor, Access: c.Access,
				})
			}
		}
	}
	for _, m := range spec.Mounts {
		r.Mounts = append(r.Mounts, mount{
			Destination: m.Destination, Source: m.Source, Type: m.Type, Options: nonNil(m.Options),
			CDIID: mountOrigins[m.Destination].id,
		})
	}
	if spec.Process != nil {
		r.Env = append(r.Env, spec.Process.Env...)
	}
	if spec.Hooks != nil {
		for name, hooks := range map[string][]oci.Hook{
			cdi.PrestartHook:        spec.Hooks.Prestart, //nolint:staticcheck // CDI still injects it.
			cdi.CreateRuntimeHook:   spec.Hooks.CreateRuntime,
			cdi.CreateContainerHook: spec.Hooks.CreateContainer,
			cdi.StartContainerHook:  spec.Hooks.StartContainer,
			cdi.PoststartHook:       spec.Hooks.Poststart,
			cdi.PoststopHook:        spec.Hooks.Poststop,
		} {
			for _, h := range hooks {
				r.Hooks[name] = append(r.Hooks[name], hook{
					Path: h.Path, Args: nonNil(h.Args), Env: nonNil(h.Env), Timeout: h.Timeout,
				})
			}
		}
	}
	return r
}

func nonNil(values []string) []string {
	if values == nil {
		return []string{}
	}
	return values
}

// findConflicts lists every key two IDs set to different values. Each ID's value for a key is
// the last one its own effective edits (spec-level, then device) give; the same value from
// several IDs (the /dev/kfd every claim spec names) is no conflict. Keys come in the order
// they were first set.
func findConflicts(edits []deviceEdits) []conflict {
	type key struct{ what, name string }
	var order []key
	values := map[key][]conflictValue{}
	for _, e := range edits {
		mine := map[key]string{}
		var mineOrder []key
		set := func(k key, value string) {
			if _, ok := mine[k]; !ok {
				mineOrder = append(mineOrder, k)
			}
			mine[k] = value
		}
		for _, list := range e.all() {
			for _, env := range list.Env {
				name, value, _ := strings.Cut(env, "=")
				set(key{"env", name}, value)
			}
			for _, m := range list.Mounts {
				set(key{"mount", m.ContainerPath}, fmt.Sprintf(
					"source=%s type=%s options=%s", m.HostPath, m.Type, strings.Join(m.Options, ",")))
			}
			for _, n := range list.DeviceNodes {
				set(key{"deviceNode", n.Path}, fmt.Sprintf(
					"hostPath=%s type=%s major=%d minor=%d permissions=%s fileMode=%s uid=%s gid=%s",
					hostPathOf(n), n.Type, n.Major, n.Minor, n.Permissions,
					optional(n.FileMode), optional(n.UID), optional(n.GID)))
			}
		}
		for _, k := range mineOrder {
			if _, ok := values[k]; !ok {
				order = append(order, k)
			}
			values[k] = append(values[k], conflictValue{CDIID: e.id, Value: mine[k]})
		}
	}
	conflicts := []conflict{}
	for _, k := range order {
		distinct := map[string]bool{}
		for _, v := range values[k] {
			distinct[v.Value] = true
		}
		if len(distinct) > 1 {
			conflicts = append(conflicts, conflict{What: k.what, Key: k.name, Values: values[k]})
		}
	}
	return conflicts
}

func optional[T any](value *T) string {
	if value == nil {
		return "-"
	}
	return fmt.Sprint(*value)
}
