// cnidriver runs a network configuration list through Go's libcni, the
// library runtimes (containerd, CRI-O, podman 4) drive plugins with: ADD,
// CHECK and DEL with libcni's result cache and prevResult chaining,
// capabilities passed as runtimeConfig, and GC. Debian's libcni (1.1.2)
// predates GC, so "gc" does what libcni 1.2's GCNetworkList does, with
// libcni's own pieces: DEL of every cached attachment of the network that is
// not valid, then GC with cni.dev/valid-attachments to every plugin.
//
// Debian's libcni knows spec versions up to 1.0.0 only (it cannot read a
// 1.1.0 result), and GC needs 1.1.0: -gcversion 1.1.0 sends GC in that
// version to the plugins of a 1.0.0 list, as a runtime whose libcni knows
// 1.1.0 would for the list at 1.1.0.
//
// The tests build it at test time from /usr/share/gocode (GOPATH mode, no
// network); nothing built is kept in the repository.
//
//	cnidriver [flags] add|check|del|gc|cached|adddel
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

type attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

// The fields of a libcni cache entry that GC needs.
type cacheEntry struct {
	Kind           string                 `json:"kind"`
	ContainerID    string                 `json:"containerId"`
	IfName         string                 `json:"ifName"`
	NetworkName    string                 `json:"networkName"`
	NetNS          string                 `json:"netns"`
	CniArgs        [][2]string            `json:"cniArgs"`
	CapabilityArgs map[string]interface{} `json:"capabilityArgs"`
}

func fail(err error) {
	if e, ok := err.(*types.Error); ok {
		fmt.Fprintf(os.Stderr, "code %d: %s\n", e.Code, e.Error())
	} else {
		fmt.Fprintln(os.Stderr, err.Error())
	}
	os.Exit(1)
}

func parseArgs(s string) [][2]string {
	var out [][2]string
	for _, pair := range strings.Split(s, ";") {
		if kv := strings.SplitN(pair, "=", 2); len(kv) == 2 {
			out = append(out, [2]string{kv[0], kv[1]})
		}
	}
	return out
}

// gc is libcni 1.2's GCNetworkList, built from libcni 1.1.2's parts.
func gc(ctx context.Context, cni *libcni.CNIConfig, list *libcni.NetworkConfigList, cacheDir, gcVersion string, path []string, valid []attachment) error {
	var errs []string
	isValid := map[attachment]bool{}
	for _, a := range valid {
		isValid[a] = true
	}
	files, _ := filepath.Glob(filepath.Join(cacheDir, "results", "*"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		var entry cacheEntry
		if json.Unmarshal(data, &entry) != nil || entry.Kind != libcni.CNICacheV1 || entry.NetworkName != list.Name {
			continue
		}
		if isValid[attachment{entry.ContainerID, entry.IfName}] {
			continue
		}
		rt := &libcni.RuntimeConf{ContainerID: entry.ContainerID, IfName: entry.IfName, NetNS: entry.NetNS, Args: entry.CniArgs, CapabilityArgs: entry.CapabilityArgs}
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			errs = append(errs, fmt.Sprintf("failed to delete stale attachment %s %s: %v", entry.ContainerID, entry.IfName, err))
		}
	}
	if gcVersion == "" {
		gcVersion = list.CNIVersion
	}
	if gt, _ := version.GreaterThanOrEqualTo(gcVersion, "1.1.0"); gt {
		if valid == nil {
			valid = []attachment{}
		}
		for _, plugin := range list.Plugins {
			conf, err := libcni.InjectConf(plugin, map[string]interface{}{
				"name": list.Name, "cniVersion": gcVersion,
				"cni.dev/valid-attachments": valid, "cni.dev/attachments": valid,
			})
			if err != nil {
				return err
			}
			pluginPath, err := invoke.FindInPath(plugin.Network.Type, path)
			if err == nil {
				err = invoke.ExecPluginWithoutResult(ctx, pluginPath, conf.Bytes, &invoke.Args{Command: "GC", Path: strings.Join(path, ":")}, nil)
			}
			if err != nil {
				errs = append(errs, fmt.Sprintf("failed to GC plugin %s: %v", plugin.Network.Type, err))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

func main() {
	conflist := flag.String("conflist", "", "the network configuration list (file)")
	netns := flag.String("netns", "", "the container's netns path")
	id := flag.String("id", "", "container ID")
	ifname := flag.String("ifname", "eth0", "interface name")
	cacheDir := flag.String("cache", "", "libcni's cache folder")
	cniPath := flag.String("path", "", "plugin folders, colon-separated")
	capArgs := flag.String("cap", "", "capability arguments (JSON object)")
	cniArgs := flag.String("args", "", "CNI_ARGS (K=V;K=V)")
	validJSON := flag.String("valid", "null", "GC: the valid attachments (JSON list)")
	gcVersion := flag.String("gcversion", "", "GC: the cniVersion sent to the plugins (default: the list's)")
	flag.Parse()
	if flag.NArg() != 1 || *conflist == "" {
		fmt.Fprintln(os.Stderr, "usage: cnidriver -conflist FILE [-netns P -id ID -ifname IF -cache D -path P -cap JSON -args A -valid JSON -gcversion V] add|check|del|gc|cached|adddel")
		os.Exit(2)
	}
	list, err := libcni.ConfListFromFile(*conflist)
	if err != nil {
		fail(err)
	}
	path := filepath.SplitList(*cniPath)
	cni := libcni.NewCNIConfigWithCacheDir(path, *cacheDir, nil)
	rt := &libcni.RuntimeConf{ContainerID: *id, NetNS: *netns, IfName: *ifname, Args: parseArgs(*cniArgs)}
	if *capArgs != "" {
		if err := json.Unmarshal([]byte(*capArgs), &rt.CapabilityArgs); err != nil {
			fail(err)
		}
	}
	ctx := context.Background()
	switch flag.Arg(0) {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(err)
		}
		if err := result.Print(); err != nil {
			fail(err)
		}
	case "check":
		err = cni.CheckNetworkList(ctx, list, rt)
	case "del":
		err = cni.DelNetworkList(ctx, list, rt)
	case "cached":
		result, err := cni.GetNetworkListCachedResult(list, rt)
		if err != nil {
			fail(err)
		}
		if result == nil {
			fmt.Print("null")
			return
		}
		if err := result.Print(); err != nil {
			fail(err)
		}
	case "gc":
		var valid []attachment
		if err := json.Unmarshal([]byte(*validJSON), &valid); err != nil {
			fail(err)
		}
		err = gc(ctx, cni, list, *cacheDir, *gcVersion, path, valid)
	case "adddel":
		// One ADD and one DEL, timed inside the process: what a runtime,
		// which is a long-running process, pays for them.
		start := time.Now()
		if _, err := cni.AddNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
		added := time.Now()
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
		fmt.Printf("{\"add\": %.3f, \"del\": %.3f}\n", added.Sub(start).Seconds()*1000, time.Since(added).Seconds()*1000)
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n", flag.Arg(0))
		os.Exit(2)
	}
	if err != nil {
		fail(err)
	}
}
