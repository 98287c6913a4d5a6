// Package deploy holds the deployment files (systemd units, Kubernetes
// manifests, the image builder in mkimage) and the tests that keep them
// valid: the manifests decode strictly against the Kubernetes API types and
// keep their security properties; the units pass systemd-analyze verify.
package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// manifests decodes every document of every deploy/k8s/*.yaml strictly:
// an unknown or misspelt field fails (as kubectl apply --validate=strict
// would), and so does a kind the test does not know.
func manifests(t *testing.T) map[string][]any {
	t.Helper()
	files, err := filepath.Glob("k8s/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/k8s: %v", err)
	}
	out := map[string][]any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Fatalf("%s #%d: %v", f, i, err)
			}
			var obj any
			switch tm.APIVersion + " " + tm.Kind {
			case "v1 Namespace":
				obj = &corev1.Namespace{}
			case "v1 ConfigMap":
				obj = &corev1.ConfigMap{}
			case "v1 Service":
				obj = &corev1.Service{}
			case "apps/v1 DaemonSet":
				obj = &appsv1.DaemonSet{}
			case "apps/v1 Deployment":
				obj = &appsv1.Deployment{}
			default:
				t.Fatalf("%s #%d: %s %s: not a kind this test decodes", f, i, tm.APIVersion, tm.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s #%d (%s): strict decoding: %v", f, i, tm.Kind, err)
			}
			out[tm.Kind] = append(out[tm.Kind], obj)
		}
	}
	return out
}

func stripComments(doc string) string {
	var b strings.Builder
	for l := range strings.Lines(doc) {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l)
		}
	}
	return b.String()
}

// TestManifests checks what the deployment promises: both programs on the
// host network, not privileged, every capability dropped but NET_RAW and
// NET_ADMIN (intercept: NET_ADMIN), no privilege escalation, a read-only
// root, and the relay key from a Secret mounted 0600 and given with
// --key-file, never on the command line.
func TestManifests(t *testing.T) {
	m := manifests(t)
	pods := map[string]*corev1.PodTemplateSpec{}
	var selectors = map[string]*metav1.LabelSelector{}
	for _, o := range m["DaemonSet"] {
		ds := o.(*appsv1.DaemonSet)
		pods[ds.Name], selectors[ds.Name] = &ds.Spec.Template, ds.Spec.Selector
	}
	for _, o := range m["Deployment"] {
		d := o.(*appsv1.Deployment)
		pods[d.Name], selectors[d.Name] = &d.Spec.Template, d.Spec.Selector
	}
	want := map[string][]corev1.Capability{
		"stackcopy": {"NET_ADMIN", "NET_RAW"},
		"intercept": {"NET_ADMIN"},
	}
	for name, caps := range want {
		tpl, ok := pods[name]
		if !ok {
			t.Errorf("no DaemonSet or Deployment %q", name)
			continue
		}
		t.Run(name, func(t *testing.T) { checkPod(t, name, tpl, selectors[name], caps) })
	}
	if len(m["Namespace"]) != 1 {
		t.Errorf("want one Namespace, got %d", len(m["Namespace"]))
	}
}

func checkPod(t *testing.T, name string, tpl *corev1.PodTemplateSpec, sel *metav1.LabelSelector, caps []corev1.Capability) {
	spec := &tpl.Spec
	if !spec.HostNetwork {
		t.Error("hostNetwork is off: the programs must see the node's interfaces")
	}
	if len(spec.NodeSelector) == 0 {
		t.Error("no nodeSelector: it would run on every node, not only the online or target ones")
	}
	if sel == nil || len(sel.MatchLabels) == 0 {
		t.Fatal("no selector")
	}
	for k, v := range sel.MatchLabels {
		if tpl.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the template's labels", k, v)
		}
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the service account token is mounted: neither program talks to the API server")
	}
	keyMounts := map[string]bool{} // volume names holding the key
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			t.Errorf("volume %s is a hostPath", v.Name)
		}
		if s := v.Secret; s != nil {
			if s.DefaultMode == nil || (*s.DefaultMode != 0o600 && *s.DefaultMode != 0o400) {
				t.Errorf("secret volume %s: defaultMode %v, want 0600 (or 0400)", v.Name, s.DefaultMode)
			}
			keyMounts[v.Name] = true
		}
	}
	all := slices.Concat(spec.InitContainers, spec.Containers)
	for _, c := range all {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("container %s: no securityContext", c.Name)
			continue
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("container %s is privileged", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s: allowPrivilegeEscalation not false", c.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("container %s: root filesystem writable", c.Name)
		}
		if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("container %s: capabilities not dropped to none first: %+v", c.Name, sc.Capabilities)
			continue
		}
		got := slices.Clone(sc.Capabilities.Add)
		slices.Sort(got)
		if !slices.Equal(got, caps) {
			t.Errorf("container %s adds %v, want exactly %v", c.Name, got, caps)
		}
		args := strings.Join(slices.Concat(c.Command, c.Args), " ")
		keyArg := regexp.MustCompile(`--key-file (\S+)`).FindStringSubmatch(args)
		if keyArg == nil {
			t.Errorf("container %s: no --key-file: %s", c.Name, args)
			continue
		}
		mounted := false
		for _, vm := range c.VolumeMounts {
			if keyMounts[vm.Name] && strings.HasPrefix(keyArg[1], vm.MountPath+"/") {
				mounted = true
				if !vm.ReadOnly {
					t.Errorf("container %s: key mount %s writable", c.Name, vm.MountPath)
				}
			}
		}
		if !mounted {
			t.Errorf("container %s: --key-file %s is not in a Secret mount", c.Name, keyArg[1])
		}
		for _, e := range c.Env {
			if strings.Contains(e.Name, "KEY") && e.Value != "" {
				t.Errorf("container %s: key material in env %s", c.Name, e.Name)
			}
		}
		if !strings.HasPrefix(strings.Join(c.Command, " "), "/usr/local/bin/"+name) {
			t.Errorf("container %s runs %q, want /usr/local/bin/%s", c.Name, c.Command, name)
		}
	}
}

// TestSystemdUnits runs systemd-analyze verify on both units (with their
// binaries and flag files pointed at stand-ins) and checks the hardening
// they promise. Any line verify prints is a failure: it exits 0 on unknown
// keys.
func TestSystemdUnits(t *testing.T) {
	for _, unit := range []string{"stackcopy", "intercept"} {
		b, err := os.ReadFile("systemd/" + unit + ".service")
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		for _, want := range []string{
			"AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW",
			"CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
			"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
			"DynamicUser=yes", "EnvironmentFile=/etc/default/" + unit,
			"LoadCredential=relay.key:/etc/stackcopy/relay.key", "--key-file %d/relay.key",
		} {
			if !strings.Contains(text, want+"\n") && !strings.Contains(text, want+" ") {
				t.Errorf("%s.service: missing %q", unit, want)
			}
		}
		if unit == "stackcopy" && !strings.Contains(text, "ReadWritePaths=/var/cache/stackcopy") {
			t.Errorf("stackcopy.service: the spill directory is not writable (ReadWritePaths)")
		}
		if _, err := os.Stat("systemd/" + unit + ".default"); err != nil {
			t.Errorf("no example flag file: %v", err)
		}
	}

	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian: apt-get install systemd): units not verified")
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var units []string
	for _, unit := range []string{"stackcopy", "intercept"} {
		b, _ := os.ReadFile("systemd/" + unit + ".service")
		b = bytes.ReplaceAll(b, []byte("/usr/local/bin/"+unit), []byte(fake))
		b = bytes.ReplaceAll(b, []byte("EnvironmentFile=/etc/default/"+unit), []byte("EnvironmentFile="+filepath.Join(dir, unit+".default")))
		if err := os.WriteFile(filepath.Join(dir, unit+".default"), []byte(""), 0o644); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, unit+".service")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, p)
	}
	out, err := exec.Command(sa, append([]string{"verify"}, units...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestStrictDecoding checks the decoder rejects what it claims to: a
// misspelt field such as hostNetwrk must fail, not vanish.
func TestStrictDecoding(t *testing.T) {
	var ds appsv1.DaemonSet
	err := yaml.UnmarshalStrict([]byte("apiVersion: apps/v1\nkind: DaemonSet\nspec:\n  template:\n    spec:\n      hostNetwrk: true\n"), &ds)
	if err == nil || !strings.Contains(err.Error(), "hostNetwrk") {
		t.Errorf("a misspelt field decoded: %v", err)
	}
}
