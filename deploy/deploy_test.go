// Package deploy holds no code: its tests check the container image build, the
// Compose file and the Kubernetes manifests under deploy/.
package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/switchyard-dev/switchyard/backends/grpcnative"
	"github.com/switchyard-dev/switchyard/router/config"
)

// overlays maps each overlay directory to the cloud and region it deploys.
var overlays = map[string]struct{ cloud, region string }{
	"eks-us-east-1":    {"aws", "us-east-1"},
	"gke-europe-west4": {"gcp", "europe-west4"},
	"aks-eastus":       {"azure", "eastus"},
}

// ---------------------------------------------------------------- Kubernetes

// manifests is one kustomize build (or a set of files), decoded into API types.
type manifests struct {
	source       string
	deployments  []*appsv1.Deployment
	services     []*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	serviceAccts map[string]*corev1.ServiceAccount
	pdbs         []*policyv1.PodDisruptionBudget
	hpas         []*autoscalingv2.HorizontalPodAutoscaler
	netpols      []*networkingv1.NetworkPolicy
}

// operatorSecrets are created by the operator, never shipped: a Secret in the
// manifests would be a placeholder that works if applied.
var operatorSecrets = map[string][]string{
	"switchyard-tokens":      {"admin-token"},
	"switchyard-backend-tls": {"ca.crt", "tls.crt", "tls.key"},
}

// decodeStrict decodes one YAML document as the API type its apiVersion and
// kind name; a field the type does not have is an error.
func decodeStrict(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := sigsyaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	var obj any
	switch tm.APIVersion + "/" + tm.Kind {
	case "apps/v1/Deployment":
		obj = &appsv1.Deployment{}
	case "v1/Service":
		obj = &corev1.Service{}
	case "v1/ConfigMap":
		obj = &corev1.ConfigMap{}
	case "v1/Secret":
		obj = &corev1.Secret{}
	case "networking.k8s.io/v1/NetworkPolicy":
		obj = &networkingv1.NetworkPolicy{}
	case "v1/ServiceAccount":
		obj = &corev1.ServiceAccount{}
	case "policy/v1/PodDisruptionBudget":
		obj = &policyv1.PodDisruptionBudget{}
	case "autoscaling/v2/HorizontalPodAutoscaler":
		obj = &autoscalingv2.HorizontalPodAutoscaler{}
	default:
		return nil, fmt.Errorf("unexpected apiVersion %q kind %q", tm.APIVersion, tm.Kind)
	}
	if err := sigsyaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, err)
	}
	return obj, nil
}

// splitDocs splits a multi-document YAML stream, dropping empty documents.
func splitDocs(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(b), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func (m *manifests) add(obj any) error {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		m.deployments = append(m.deployments, o)
	case *corev1.Service:
		m.services = append(m.services, o)
	case *corev1.ConfigMap:
		if _, dup := m.configMaps[o.Name]; dup {
			return fmt.Errorf("ConfigMap %q twice", o.Name)
		}
		m.configMaps[o.Name] = o
	case *corev1.Secret:
		m.secrets[o.Name] = o
	case *corev1.ServiceAccount:
		m.serviceAccts[o.Name] = o
	case *policyv1.PodDisruptionBudget:
		m.pdbs = append(m.pdbs, o)
	case *autoscalingv2.HorizontalPodAutoscaler:
		m.hpas = append(m.hpas, o)
	case *networkingv1.NetworkPolicy:
		m.netpols = append(m.netpols, o)
	}
	return nil
}

// build runs kustomize (the library kubectl -k uses) on dir and decodes every
// resulting resource strictly.
func build(t *testing.T, dir string) *manifests {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	m := &manifests{source: dir, configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		serviceAccts: map[string]*corev1.ServiceAccount{}}
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		obj, err := decodeStrict(y)
		if err != nil {
			t.Fatalf("%s: built resource %s: %v", dir, r.CurId(), err)
		}
		if err := m.add(obj); err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
	}
	return m
}

// TestManifestFilesParseStrictly decodes every file under deploy/k8s on its
// own: resources and patches as their API kinds, kustomization.yaml as a
// Kustomization whose resource and patch paths exist.
func TestManifestFilesParseStrictly(t *testing.T) {
	var files []string
	err := filepath.WalkDir("k8s", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 12 {
		t.Fatalf("found only %d manifest files under k8s/: %v", len(files), files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(f) == "kustomization.yaml" {
			checkKustomization(t, f, b)
			continue
		}
		docs := splitDocs(b)
		if len(docs) == 0 {
			t.Errorf("%s: no YAML document", f)
		}
		for i, d := range docs {
			if _, err := decodeStrict(d); err != nil {
				t.Errorf("%s (document %d): %v", f, i+1, err)
			}
		}
	}
}

func checkKustomization(t *testing.T, file string, b []byte) {
	t.Helper()
	var k kusttypes.Kustomization
	if err := sigsyaml.UnmarshalStrict(b, &k); err != nil {
		t.Errorf("%s: %v", file, err)
		return
	}
	if k.Kind != "Kustomization" || k.APIVersion != "kustomize.config.k8s.io/v1beta1" {
		t.Errorf("%s: apiVersion/kind %s/%s", file, k.APIVersion, k.Kind)
	}
	dir := filepath.Dir(file)
	paths := slices.Clone(k.Resources)
	for _, p := range k.Patches {
		if p.Path == "" {
			t.Errorf("%s: inline patch: keep patches in files so they are checked", file)
		}
		paths = append(paths, p.Path)
	}
	for _, p := range paths {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("%s: %v", file, err)
		}
	}
	if len(k.PatchesStrategicMerge) > 0 || len(k.PatchesJson6902) > 0 || len(k.CommonLabels) > 0 { //nolint:staticcheck // checking that deprecated fields stay unused
		t.Errorf("%s: uses deprecated fields (patchesStrategicMerge, patchesJson6902, commonLabels)", file)
	}
}

// TestKustomizeBase checks the references inside the base build.
func TestKustomizeBase(t *testing.T) {
	m := build(t, "k8s/base")
	checkRefs(t, m)
}

// TestKustomizeOverlays builds each overlay (patches merged onto the base) and
// checks the references again, plus what the overlay is for: its region.
func TestKustomizeOverlays(t *testing.T) {
	entries, err := os.ReadDir("k8s/overlays")
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	want := make([]string, 0, len(overlays))
	for k := range overlays {
		want = append(want, k)
	}
	sort.Strings(want)
	if !slices.Equal(dirs, want) {
		t.Fatalf("overlays %v, want %v (update the table in this test)", dirs, want)
	}

	baseFleet := fleetOf(t, build(t, "k8s/base"))
	shares := map[string]int{}
	for _, name := range dirs {
		ov := overlays[name]
		t.Run(name, func(t *testing.T) {
			m := build(t, filepath.Join("k8s/overlays", name))
			checkRefs(t, m)
			d := m.deployments[0]
			if d.Namespace == "" {
				t.Errorf("overlay sets no namespace")
			}
			c := routerContainer(t, d)
			if v := envValue(c, "SWITCHYARD_REGION"); v != ov.region {
				t.Errorf("SWITCHYARD_REGION = %q, want %q", v, ov.region)
			}
			if a := d.Spec.Template.Annotations["switchyard.dev/region"]; a != ov.region {
				t.Errorf("pod annotation switchyard.dev/region = %q, want %q", a, ov.region)
			}
			if !requiresNodeLabel(d.Spec.Template.Spec.Affinity, "topology.kubernetes.io/region", ov.region) {
				t.Errorf("node affinity does not require topology.kubernetes.io/region=%s", ov.region)
			}
			hpa := m.hpas[0]
			if d.Spec.Replicas == nil || *d.Spec.Replicas < *hpa.Spec.MinReplicas || *d.Spec.Replicas > hpa.Spec.MaxReplicas {
				t.Errorf("replicas %v outside the HPA's %d..%d", d.Spec.Replicas, *hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
			}
			fleet := fleetOf(t, m)
			if len(fleet.Pools) != len(baseFleet.Pools) {
				t.Errorf("%d pools, base has %d", len(fleet.Pools), len(baseFleet.Pools))
			}
			for _, p := range fleet.Pools {
				bp, ok := baseFleet.Pool(p.Name)
				if !ok {
					t.Errorf("pool %q is not in the base fleet", p.Name)
					continue
				}
				if !slices.Equal(p.Endpoints, bp.Endpoints) || p.Region != bp.Region || p.Cloud != bp.Cloud {
					t.Errorf("pool %q: endpoints/region/cloud differ from the base fleet", p.Name)
				}
				shares[p.Name] += p.Limits.MaxConcurrent
			}
			if _, err := fleet.LatencyTable(); err != nil {
				t.Error(err)
			}
		})
	}
	// Each region counts in its own Redis: together the regions' shares of a
	// pool must not exceed the pool's real limit (the base fleet's).
	for _, p := range baseFleet.Pools {
		if shares[p.Name] > p.Limits.MaxConcurrent {
			t.Errorf("pool %q: regions' max_concurrent shares add up to %d, over its limit %d", p.Name, shares[p.Name], p.Limits.MaxConcurrent)
		}
	}
}

func requiresNodeLabel(a *corev1.Affinity, key, value string) bool {
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return false
	}
	terms := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) == 0 {
		return false
	}
	for _, term := range terms { // terms are ORed: every one must pin the region
		found := false
		for _, e := range term.MatchExpressions {
			if e.Key == key && e.Operator == corev1.NodeSelectorOpIn && slices.Equal(e.Values, []string{value}) {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func routerContainer(t *testing.T, d *appsv1.Deployment) *corev1.Container {
	t.Helper()
	for i := range d.Spec.Template.Spec.Containers {
		if c := &d.Spec.Template.Spec.Containers[i]; c.Name == "switchyard" {
			return c
		}
	}
	t.Fatalf("Deployment %s has no container named switchyard", d.Name)
	return nil
}

func envValue(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// flagValues reads --name=value and --name value pairs.
func flagValues(args []string) map[string]string {
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, val, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok && i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
			val = args[i+1]
			i++
		}
		out[name] = val
	}
	return out
}

func portOf(addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(p)
}

// fleetOf parses the fleet the Deployment's --config points at.
func fleetOf(t *testing.T, m *manifests) *config.Fleet {
	t.Helper()
	cm, key := configFileSource(t, m)
	f, err := config.Parse([]byte(cm.Data[key]), m.source+": ConfigMap "+cm.Name+" key "+key)
	if err != nil {
		t.Fatalf("fleet config: %v", err)
	}
	return f
}

// configFileSource resolves --config through the volume mounts to a ConfigMap key.
func configFileSource(t *testing.T, m *manifests) (*corev1.ConfigMap, string) {
	t.Helper()
	if len(m.deployments) != 1 {
		t.Fatalf("%s: %d Deployments, want 1", m.source, len(m.deployments))
	}
	d := m.deployments[0]
	c := routerContainer(t, d)
	cfg := flagValues(c.Args)["config"]
	if cfg == "" {
		t.Fatalf("%s: no --config in args %v", m.source, c.Args)
	}
	for _, vm := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(cfg, strings.TrimSuffix(vm.MountPath, "/")+"/")
		if !ok {
			continue
		}
		if vm.SubPath != "" {
			t.Errorf("%s: volume %q is mounted with subPath: ConfigMap edits would never reach the pod", m.source, vm.Name)
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != vm.Name || v.ConfigMap == nil {
				continue
			}
			cm, ok := m.configMaps[v.ConfigMap.Name]
			if !ok {
				t.Fatalf("%s: volume %q: no ConfigMap %q", m.source, v.Name, v.ConfigMap.Name)
			}
			key := rel
			if len(v.ConfigMap.Items) > 0 {
				key = ""
				for _, it := range v.ConfigMap.Items {
					if it.Path == rel {
						key = it.Key
					}
				}
			}
			if _, ok := cm.Data[key]; !ok || key == "" {
				t.Fatalf("%s: --config %s: ConfigMap %q has no key for %q", m.source, cfg, cm.Name, rel)
			}
			return cm, key
		}
	}
	t.Fatalf("%s: --config %s is not inside a mounted ConfigMap volume", m.source, cfg)
	return nil, ""
}

// checkRefs checks that the objects of one build agree with each other.
func checkRefs(t *testing.T, m *manifests) {
	if len(m.deployments) != 1 || len(m.hpas) != 1 || len(m.pdbs) != 1 || len(m.services) == 0 {
		t.Fatalf("%s: want 1 Deployment, 1 HPA, 1 PDB and Services; got %d, %d, %d, %d",
			m.source, len(m.deployments), len(m.hpas), len(m.pdbs), len(m.services))
	}
	d := m.deployments[0]
	pod := d.Spec.Template
	podLabels := labels.Set(pod.Labels)

	// Selectors.
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(podLabels) {
		t.Errorf("Deployment selector %v does not match its pod labels %v (%v)", d.Spec.Selector, pod.Labels, err)
	}
	for _, s := range m.services {
		if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
			t.Errorf("Service %s selector %v does not match the pod labels %v", s.Name, s.Spec.Selector, pod.Labels)
		}
	}
	pdb := m.pdbs[0]
	if psel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector); err != nil || psel.Empty() || !psel.Matches(podLabels) {
		t.Errorf("PDB selector %v does not match the pod labels (%v)", pdb.Spec.Selector, err)
	}
	if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
		t.Errorf("PDB sets neither maxUnavailable nor minAvailable")
	}
	hpa := m.hpas[0]
	if ref := hpa.Spec.ScaleTargetRef; ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || ref.Name != d.Name {
		t.Errorf("HPA targets %s %s %s, want apps/v1 Deployment %s", ref.APIVersion, ref.Kind, ref.Name, d.Name)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas {
		t.Errorf("HPA min/max replicas %v/%d: want min >= 2 (so the PDB allows a drain) and max >= min", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
	}
	cpu := false
	for _, mt := range hpa.Spec.Metrics {
		if mt.Type == autoscalingv2.ResourceMetricSourceType && mt.Resource != nil && mt.Resource.Name == corev1.ResourceCPU {
			cpu = true
		}
	}
	if !cpu {
		t.Errorf("HPA does not scale on CPU")
	}
	for _, tsc := range pod.Spec.TopologySpreadConstraints {
		if s, err := metav1.LabelSelectorAsSelector(tsc.LabelSelector); err != nil || !s.Matches(podLabels) {
			t.Errorf("topology spread %s: selector does not match the pod labels", tsc.TopologyKey)
		}
	}
	if len(pod.Spec.TopologySpreadConstraints) == 0 {
		t.Errorf("no topologySpreadConstraints")
	}
	if sa := pod.Spec.ServiceAccountName; sa != "" {
		if _, ok := m.serviceAccts[sa]; !ok {
			t.Errorf("serviceAccountName %q: no such ServiceAccount", sa)
		}
	}

	c := routerContainer(t, d)
	flags := flagValues(c.Args)

	// ConfigMap and Secret references.
	envNames := map[string]bool{}
	for _, e := range c.Env {
		envNames[e.Name] = true
		if e.ValueFrom == nil {
			continue
		}
		if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
			cm, ok := m.configMaps[r.Name]
			if !ok {
				t.Errorf("env %s: no ConfigMap %q", e.Name, r.Name)
			} else if _, ok := cm.Data[r.Key]; !ok {
				t.Errorf("env %s: ConfigMap %q has no key %q", e.Name, r.Name, r.Key)
			}
		}
		if r := e.ValueFrom.SecretKeyRef; r != nil {
			s, ok := m.secrets[r.Name]
			if keys, op := operatorSecrets[r.Name]; op {
				if ok {
					t.Errorf("env %s: Secret %q is shipped in the manifests; the operator must create it (a shipped value is a placeholder that works)", e.Name, r.Name)
				}
				if !slices.Contains(keys, r.Key) || (r.Optional != nil && *r.Optional) {
					t.Errorf("env %s: Secret %q key %q must be one of %v and not optional", e.Name, r.Name, r.Key, keys)
				}
				continue
			}
			if !ok {
				t.Errorf("env %s: no Secret %q", e.Name, r.Name)
			} else if _, ok := s.StringData[r.Key]; !ok {
				if _, ok := s.Data[r.Key]; !ok {
					t.Errorf("env %s: Secret %q has no key %q", e.Name, r.Name, r.Key)
				}
			}
		}
		if r := e.ValueFrom.ResourceFieldRef; r != nil && r.ContainerName != "" && r.ContainerName != c.Name {
			t.Errorf("env %s: resourceFieldRef names container %q", e.Name, r.ContainerName)
		}
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil && m.configMaps[ef.ConfigMapRef.Name] == nil {
			t.Errorf("envFrom: no ConfigMap %q", ef.ConfigMapRef.Name)
		}
		if ef.SecretRef != nil && m.secrets[ef.SecretRef.Name] == nil {
			t.Errorf("envFrom: no Secret %q", ef.SecretRef.Name)
		}
	}
	for _, v := range pod.Spec.Volumes {
		if v.ConfigMap != nil {
			cm, ok := m.configMaps[v.ConfigMap.Name]
			if !ok {
				t.Errorf("volume %s: no ConfigMap %q", v.Name, v.ConfigMap.Name)
				continue
			}
			for _, it := range v.ConfigMap.Items {
				if _, ok := cm.Data[it.Key]; !ok {
					t.Errorf("volume %s: ConfigMap %q has no key %q", v.Name, cm.Name, it.Key)
				}
			}
		}
		if v.Secret != nil {
			_, shipped := m.secrets[v.Secret.SecretName]
			_, op := operatorSecrets[v.Secret.SecretName]
			switch {
			case op && shipped:
				t.Errorf("volume %s: Secret %q is shipped in the manifests; the operator must create it", v.Name, v.Secret.SecretName)
			case op && v.Secret.Optional != nil && *v.Secret.Optional:
				t.Errorf("volume %s: Secret %q must not be optional", v.Name, v.Secret.SecretName)
			case !op && !shipped:
				t.Errorf("volume %s: no Secret %q", v.Name, v.Secret.SecretName)
			}
		}
	}
	for _, vm := range c.VolumeMounts {
		if !slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == vm.Name }) {
			t.Errorf("volumeMount %s: no such volume", vm.Name)
		}
	}
	// $(VAR) in args must name an env var of the container (else kubelet passes it literally).
	for _, a := range c.Args {
		for _, ref := range regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).FindAllStringSubmatch(a, -1) {
			if !envNames[ref[1]] {
				t.Errorf("arg %q refers to $(%s), which the container does not define", a, ref[1])
			}
		}
	}

	// --config resolves to the fleet ConfigMap and the fleet is valid.
	fleet := fleetOf(t, m)
	checkBackendTLS(t, fleet, pod, c)
	checkNetworkPolicy(t, m, fleet, c)

	// --redis comes from the Redis ConfigMap; its URL has a scheme the router knows.
	if flags["redis"] != "$(SWITCHYARD_REDIS_URL)" {
		t.Errorf("--redis = %q, want $(SWITCHYARD_REDIS_URL)", flags["redis"])
	}
	if cm, ok := m.configMaps["switchyard-redis"]; ok {
		u, err := url.Parse(cm.Data["SWITCHYARD_REDIS_URL"])
		if err != nil || !slices.Contains([]string{"redis", "rediss", "redis+cluster"}, u.Scheme) || u.Host == "" {
			t.Errorf("SWITCHYARD_REDIS_URL %q: want redis://, rediss:// or redis+cluster:// with a host (%v)", cm.Data["SWITCHYARD_REDIS_URL"], err)
		}
	}

	// Ports: listen flags, container ports, Service targetPorts, probes.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for flag, name := range map[string]string{"listen": "grpc", "metrics-listen": "metrics", "http-listen": "http"} {
		p, err := portOf(flags[flag])
		if err != nil {
			t.Errorf("--%s %q: %v", flag, flags[flag], err)
			continue
		}
		if host, _, _ := net.SplitHostPort(flags[flag]); host != "0.0.0.0" && host != "" {
			t.Errorf("--%s %q: a pod must listen on 0.0.0.0", flag, flags[flag])
		}
		if ports[name] != int32(p) {
			t.Errorf("--%s port %d, but container port %q is %d", flag, p, name, ports[name])
		}
	}
	resolve := func(ip intstr.IntOrString) (int32, bool) {
		if ip.Type == intstr.String {
			p, ok := ports[ip.StrVal]
			return p, ok
		}
		return ip.IntVal, slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.ContainerPort == ip.IntVal })
	}
	for _, s := range m.services {
		for _, sp := range s.Spec.Ports {
			tp := sp.TargetPort
			if tp.Type == intstr.Int && tp.IntVal == 0 {
				tp = intstr.FromInt32(sp.Port)
			}
			cp, ok := resolve(tp)
			if !ok {
				t.Errorf("Service %s port %s: targetPort %s is not a container port", s.Name, sp.Name, tp.String())
			}
			if sp.Name == "grpc" && (sp.AppProtocol == nil || *sp.AppProtocol != "grpc" || cp != ports["grpc"]) {
				t.Errorf("Service %s: port grpc must target the gRPC port with appProtocol grpc", s.Name)
			}
		}
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		if p == nil {
			if name != "startup" {
				t.Errorf("no %s probe", name)
			}
			continue
		}
		if p.GRPC == nil {
			t.Errorf("%s probe is not a gRPC health probe", name)
			continue
		}
		if p.GRPC.Port != ports["grpc"] {
			t.Errorf("%s probe port %d, gRPC container port %d", name, p.GRPC.Port, ports["grpc"])
		}
		if p.GRPC.Service != nil && !slices.Contains([]string{"", "switchyard.v1.Inference"}, *p.GRPC.Service) {
			t.Errorf("%s probe asks for service %q, which the router does not report", name, *p.GRPC.Service)
		}
	}

	// Shutdown: preStop, then SIGTERM drain for --shutdown-timeout, all inside the grace period.
	shutdown, err := time.ParseDuration(flags["shutdown-timeout"])
	if err != nil {
		t.Errorf("--shutdown-timeout %q: %v", flags["shutdown-timeout"], err)
	}
	var preStop time.Duration
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Errorf("no preStop sleep (the image has no shell, so exec sleep cannot work)")
	} else {
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		if preStop < 5*time.Second {
			t.Errorf("preStop sleep %v: too short for endpoints to update", preStop)
		}
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= preStop+shutdown {
		t.Errorf("terminationGracePeriodSeconds %v must exceed preStop %v + --shutdown-timeout %v", g, preStop, shutdown)
	}
	if l, g := c.LivenessProbe, pod.Spec.TerminationGracePeriodSeconds; l != nil && g != nil && l.PeriodSeconds*l.FailureThreshold <= int32(*g) {
		// A draining router reports NOT_SERVING on every service; liveness must not restart it mid-drain.
		t.Errorf("liveness gives up after %ds, within the %ds grace period: a draining pod would be restarted", l.PeriodSeconds*l.FailureThreshold, *g)
	}
	if s := d.Spec.Strategy.RollingUpdate; s == nil || s.MaxUnavailable == nil || s.MaxUnavailable.String() != "0" {
		t.Errorf("rolling update must keep every replica until its replacement is ready (maxUnavailable 0)")
	}

	// Resources and security.
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
		if req.IsZero() || lim.IsZero() || lim.Cmp(req) < 0 {
			t.Errorf("resources %s: request %v, limit %v", r, req.String(), lim.String())
		}
	}
	psc, sc := pod.Spec.SecurityContext, c.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod must run as a non-root user")
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container must have a read-only root filesystem, no privilege escalation, all capabilities dropped")
	}
}

// checkBackendTLS: every native (grpc adapter) pool whose endpoints are not
// loopback links with mutual TLS, from files of the operator's
// switchyard-backend-tls Secret mounted into the router container.
func checkBackendTLS(t *testing.T, fleet *config.Fleet, pod corev1.PodTemplateSpec, c *corev1.Container) {
	t.Helper()
	tlsDir := ""
	for _, v := range pod.Spec.Volumes {
		if v.Secret == nil || v.Secret.SecretName != "switchyard-backend-tls" {
			continue
		}
		for _, vm := range c.VolumeMounts {
			if vm.Name == v.Name {
				tlsDir = vm.MountPath
			}
		}
	}
	for _, p := range fleet.Pools {
		if p.Adapter != grpcnative.AdapterName {
			continue
		}
		remote := false
		for _, e := range p.Endpoints {
			host, _, _ := net.SplitHostPort(strings.TrimPrefix(e, "dns:///"))
			if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
				remote = true
			}
		}
		if !remote {
			continue
		}
		for _, opt := range []string{grpcnative.OptTLSCAFile, grpcnative.OptTLSCertFile, grpcnative.OptTLSKeyFile} {
			f := p.Options[opt]
			switch {
			case f == "":
				t.Errorf("pool %q: native endpoints %v off the host without %s (backend links must be mutual TLS)", p.Name, p.Endpoints, opt)
			case tlsDir == "":
				t.Errorf("pool %q: %s %s, but no volume of Secret switchyard-backend-tls is mounted", p.Name, opt, f)
			case path.Dir(f) != path.Clean(tlsDir):
				t.Errorf("pool %q: %s %s is not in the switchyard-backend-tls mount %s", p.Name, opt, f, tlsDir)
			}
		}
		for k := range p.Options {
			if !slices.Contains([]string{grpcnative.OptTLS, grpcnative.OptTLSCAFile, grpcnative.OptTLSCertFile, grpcnative.OptTLSKeyFile, grpcnative.OptTLSServerName}, k) {
				t.Errorf("pool %q: option %q is unknown to the grpc adapter", p.Name, k)
			}
		}
	}
}

// checkNetworkPolicy: one policy selects the router pods for ingress and
// egress; ingress opens only the container's gRPC port to everyone and its
// metrics port to labelled namespaces; egress allows DNS, the Redis port and
// every native backend port of the fleet, and nothing on the other ports.
func checkNetworkPolicy(t *testing.T, m *manifests, fleet *config.Fleet, c *corev1.Container) {
	t.Helper()
	if len(m.netpols) != 1 {
		t.Errorf("%d NetworkPolicies, want 1", len(m.netpols))
		return
	}
	np := m.netpols[0]
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(m.deployments[0].Spec.Template.Labels)) {
		t.Errorf("NetworkPolicy %s does not select the router pods (%v)", np.Name, err)
	}
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
		t.Errorf("NetworkPolicy policyTypes %v, want Ingress and Egress", np.Spec.PolicyTypes)
	}
	named := map[string]int32{}
	for _, p := range c.Ports {
		named[p.Name] = p.ContainerPort
	}
	portNum := func(p *intstr.IntOrString) int32 {
		if p == nil {
			return 0
		}
		if p.Type == intstr.String {
			return named[p.StrVal]
		}
		return p.IntVal
	}
	for _, r := range np.Spec.Ingress {
		if len(r.Ports) == 0 {
			t.Errorf("an ingress rule allows every port")
		}
		for _, p := range r.Ports {
			switch n := portNum(p.Port); {
			case n == 0:
				t.Errorf("ingress port %v is not a container port", p.Port)
			case n == named["metrics"] && len(r.From) == 0:
				t.Errorf("ingress: the metrics port is open to every pod; limit it to the scraper's namespace")
			case n != named["grpc"] && n != named["metrics"] && n != named["http"]:
				t.Errorf("ingress opens port %d, which is neither gRPC, the HTTP front door nor metrics", n)
			}
		}
	}
	egress := map[int32]bool{}
	for _, r := range np.Spec.Egress {
		if len(r.Ports) == 0 {
			t.Errorf("an egress rule allows every port")
		}
		for _, p := range r.Ports {
			egress[portNum(p.Port)] = true
		}
	}
	want := map[string]int32{"DNS": 53}
	if cm, ok := m.configMaps["switchyard-redis"]; ok {
		if u, err := url.Parse(cm.Data["SWITCHYARD_REDIS_URL"]); err == nil {
			if p, err := strconv.Atoi(u.Port()); err == nil {
				want["Redis"] = int32(p)
			}
		}
	}
	for _, p := range fleet.Pools {
		for _, e := range p.Endpoints {
			if _, port, err := net.SplitHostPort(strings.TrimPrefix(e, "dns:///")); err == nil {
				n, _ := strconv.Atoi(port)
				want["pool "+p.Name] = int32(n)
			}
		}
	}
	for what, port := range want {
		if !egress[port] {
			t.Errorf("egress does not allow port %d (%s)", port, what)
		}
	}
}

// TestNothingShipsAWorkingPlaceholder: no Secret in the base or any overlay
// (the operator creates them), the image tag is pinned, and the tokens that
// earlier manifests carried are refused by the router itself.
func TestNothingShipsAWorkingPlaceholder(t *testing.T) {
	dirs := []string{"k8s/base"}
	for name := range overlays {
		dirs = append(dirs, filepath.Join("k8s/overlays", name))
	}
	for _, dir := range dirs {
		m := build(t, dir)
		for name := range m.secrets {
			t.Errorf("%s ships Secret %q: secrets are the operator's (a shipped value is a placeholder that works)", dir, name)
		}
		img := routerContainer(t, m.deployments[0]).Image
		repo, tag, _ := strings.Cut(img, ":")
		if i := strings.LastIndex(img, "@sha256:"); i >= 0 {
			continue // pinned by digest
		}
		if tag == "" || tag == "latest" || strings.Contains(repo, "/") == false {
			t.Errorf("%s: router image %q: want a registry image with a pinned tag or digest, not latest", dir, img)
		}
	}
	b, err := os.ReadFile("k8s/base/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`(?m)^\s*newTag:\s*"?latest"?\s*$`).Match(b) {
		t.Errorf("base kustomization pins the image to latest")
	}
}

// ---------------------------------------------------------------- Compose

type composeFile struct {
	Name     string                    `yaml:"name"`
	XImage   map[string]any            `yaml:"x-image"`
	XSimHlth map[string]any            `yaml:"x-sim-health"`
	XTools   map[string]any            `yaml:"x-tools"`
	XRouter  map[string]any            `yaml:"x-router"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
	Networks map[string]any            `yaml:"networks"`
	Configs  map[string]any            `yaml:"configs"`
	Secrets  map[string]any            `yaml:"secrets"`
}

type composeService struct {
	Image           string                    `yaml:"image"`
	Build           *composeBuild             `yaml:"build"`
	Restart         string                    `yaml:"restart"`
	ReadOnly        bool                      `yaml:"read_only"`
	User            string                    `yaml:"user"`
	CapDrop         []string                  `yaml:"cap_drop"`
	SecurityOpt     []string                  `yaml:"security_opt"`
	Volumes         []string                  `yaml:"volumes"`
	Entrypoint      []string                  `yaml:"entrypoint"`
	Command         []string                  `yaml:"command"`
	Expose          []string                  `yaml:"expose"`
	Ports           []string                  `yaml:"ports"`
	Environment     map[string]string         `yaml:"environment"`
	DependsOn       map[string]composeDepends `yaml:"depends_on"`
	Healthcheck     *composeHealthcheck       `yaml:"healthcheck"`
	StopGracePeriod string                    `yaml:"stop_grace_period"`
	Labels          map[string]string         `yaml:"labels"`
	Networks        map[string]map[string]any `yaml:"networks"`
	Deploy          map[string]any            `yaml:"deploy"`
	Ulimits         map[string]map[string]int `yaml:"ulimits"`
	Tmpfs           []string                  `yaml:"tmpfs"`
}

type composeBuild struct {
	Context    string            `yaml:"context"`
	Dockerfile string            `yaml:"dockerfile"`
	Target     string            `yaml:"target"`
	Args       map[string]string `yaml:"args"`
}

type composeDepends struct {
	Condition string `yaml:"condition"`
}

type composeHealthcheck struct {
	Test        []string `yaml:"test"`
	Interval    string   `yaml:"interval"`
	Timeout     string   `yaml:"timeout"`
	Retries     int      `yaml:"retries"`
	StartPeriod string   `yaml:"start_period"`
}

func loadCompose(t *testing.T) *composeFile {
	t.Helper()
	b, err := os.ReadFile("compose/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cf); err != nil {
		t.Fatalf("compose/compose.yaml: %v", err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		t.Fatalf("compose/compose.yaml: want one YAML document")
	}
	return &cf
}

// mountedFile returns the host file (relative to deploy/compose) mounted at target.
func mountedFile(s composeService, target string) (string, bool) {
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == target && strings.HasPrefix(parts[0], ".") {
			return filepath.Join("compose", parts[0]), true
		}
	}
	return "", false
}

// containerPort returns the container side of a ports entry: [ip:]host:container[/proto].
func containerPort(p string) string {
	p, _, _ = strings.Cut(p, "/")
	parts := strings.Split(p, ":")
	return parts[len(parts)-1]
}

func TestComposeFile(t *testing.T) {
	cf := loadCompose(t)
	if len(cf.Services) == 0 {
		t.Fatal("no services")
	}
	fleetBytes, err := os.ReadFile("compose/fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fleet, err := config.Parse(fleetBytes, "compose/fleet.yaml")
	if err != nil {
		t.Fatalf("fleet: %v", err)
	}

	var routers, sims []string
	redisServices := map[string]bool{}
	for name, s := range cf.Services {
		switch {
		case strings.HasPrefix(s.Image, "redis:"):
			redisServices[name] = true
		case len(s.Entrypoint) == 1 && path.Base(s.Entrypoint[0]) == "switchyard-sim":
			sims = append(sims, name)
		case len(s.Entrypoint) == 0 && s.Build != nil:
			routers = append(routers, name)
		default:
			t.Errorf("service %s: neither redis, a router nor a sim", name)
		}
		if s.Image == "" && s.Build == nil {
			t.Errorf("service %s: no image and no build", name)
		}
		if s.Build != nil {
			if s.Build.Dockerfile != "deploy/docker/Dockerfile" {
				t.Errorf("service %s: builds %q, want deploy/docker/Dockerfile", name, s.Build.Dockerfile)
			}
			ctx := filepath.Join("compose", s.Build.Context)
			if _, err := os.Stat(filepath.Join(ctx, "go.mod")); err != nil {
				t.Errorf("service %s: build context %s is not the repository root", name, s.Build.Context)
			}
			if _, err := os.Stat(filepath.Join(ctx, s.Build.Dockerfile)); err != nil {
				t.Errorf("service %s: %v", name, err)
			}
			wantTarget := "router"
			if len(s.Entrypoint) == 1 && path.Base(s.Entrypoint[0]) == "switchyard-sim" {
				wantTarget = "tools"
			}
			if s.Build.Target != wantTarget {
				t.Errorf("service %s: builds target %q, want %q (the router image has no simulator)", name, s.Build.Target, wantTarget)
			}
			for _, a := range []string{"GO_IMAGE_DIGEST", "RUNTIME_IMAGE_DIGEST"} {
				if _, ok := s.Build.Args[a]; !ok {
					t.Errorf("service %s: build passes no %s (base images are pinned by digest)", name, a)
				}
			}
			if !s.ReadOnly || s.User == "" || strings.HasPrefix(s.User, "0") || !slices.Contains(s.CapDrop, "ALL") {
				t.Errorf("service %s: want read_only, a non-root user and cap_drop ALL", name)
			}
		}
		for dep, cond := range s.DependsOn {
			if _, ok := cf.Services[dep]; !ok {
				t.Errorf("service %s depends on %q, which does not exist", name, dep)
			} else if cond.Condition == "service_healthy" && cf.Services[dep].Healthcheck == nil {
				t.Errorf("service %s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
			}
		}
		if s.Healthcheck == nil || len(s.Healthcheck.Test) < 2 || s.Healthcheck.Test[0] != "CMD" {
			t.Errorf("service %s: want a healthcheck in exec form [CMD, ...] (the image has no shell)", name)
		}
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("service %s: port %q is published on every interface; bind it to 127.0.0.1", name, p)
			}
		}
	}
	sort.Strings(routers)
	sort.Strings(sims)
	if len(routers) != 2 || len(redisServices) != 1 || len(sims) != 3 {
		t.Fatalf("want 2 routers, 1 redis and 3 sims; got routers %v, redis %v, sims %v", routers, redisServices, sims)
	}

	// Routers: same config, shared redis, distinct replica names, consistent ports.
	replicas := map[string]bool{}
	for _, name := range routers {
		s := cf.Services[name]
		f := flagValues(s.Command)
		u, err := url.Parse(f["redis"])
		if err != nil || u.Scheme != "redis" || !redisServices[u.Hostname()] {
			t.Errorf("router %s: --redis %q does not point at the redis service", name, f["redis"])
		} else if _, ok := s.DependsOn[u.Hostname()]; !ok {
			t.Errorf("router %s: does not depend on %s", name, u.Hostname())
		}
		host, ok := mountedFile(s, f["config"])
		if !ok {
			t.Errorf("router %s: --config %q is not a mounted file", name, f["config"])
		} else if host != "compose/fleet.yaml" {
			t.Errorf("router %s: mounts %s as its config, want fleet.yaml", name, host)
		}
		if f["replica"] == "" || replicas[f["replica"]] {
			t.Errorf("router %s: --replica %q is empty or shared", name, f["replica"])
		}
		replicas[f["replica"]] = true
		lp, err := portOf(f["listen"])
		if err != nil || !strings.HasPrefix(f["listen"], "0.0.0.0:") {
			t.Errorf("router %s: --listen %q: want 0.0.0.0:PORT", name, f["listen"])
		}
		mp, err2 := portOf(f["metrics-listen"])
		if err2 != nil {
			t.Errorf("router %s: --metrics-listen %q: %v", name, f["metrics-listen"], err2)
		}
		hp, err3 := portOf(f["http-listen"])
		if err3 != nil || !strings.HasPrefix(f["http-listen"], "0.0.0.0:") {
			t.Errorf("router %s: --http-listen %q: want 0.0.0.0:PORT", name, f["http-listen"])
		}
		published := map[string]bool{}
		for _, p := range s.Ports {
			published[containerPort(p)] = true
		}
		if !published[strconv.Itoa(lp)] || !published[strconv.Itoa(mp)] || !published[strconv.Itoa(hp)] {
			t.Errorf("router %s: publishes %v, want the gRPC port %d, metrics port %d and HTTP port %d", name, s.Ports, lp, mp, hp)
		}
		if hc := strings.Join(s.Healthcheck.Test, " "); !strings.Contains(hc, fmt.Sprintf("-addr=127.0.0.1:%d", lp)) {
			t.Errorf("router %s: healthcheck %q does not probe the gRPC port %d", name, hc, lp)
		}
		for _, sim := range sims {
			if _, ok := s.DependsOn[sim]; !ok {
				t.Errorf("router %s: does not wait for %s", name, sim)
			}
		}
		st, err := time.ParseDuration(f["shutdown-timeout"])
		grace, err2 := time.ParseDuration(s.StopGracePeriod)
		if err != nil || err2 != nil || grace <= st {
			t.Errorf("router %s: stop_grace_period %q must exceed --shutdown-timeout %q", name, s.StopGracePeriod, f["shutdown-timeout"])
		}
	}
	if a, b := flagValues(cf.Services[routers[0]].Command)["config"], flagValues(cf.Services[routers[1]].Command)["config"]; a != b {
		t.Errorf("routers read different configs: %s and %s", a, b)
	}

	// Sims: each serves exactly the fleet pools whose endpoints name it, on the ports it exposes.
	endpointPorts := map[string][]string{} // service -> ports
	poolsOf := map[string][]string{}       // service -> pools
	clouds := map[string]string{}          // service -> cloud
	for _, p := range fleet.Pools {
		if len(p.Endpoints) != 1 {
			t.Errorf("pool %s: want one endpoint per simulated pool, got %v", p.Name, p.Endpoints)
			continue
		}
		host, port, err := net.SplitHostPort(p.Endpoints[0])
		if err != nil {
			t.Errorf("pool %s: endpoint %q: %v", p.Name, p.Endpoints[0], err)
			continue
		}
		if !slices.Contains(sims, host) {
			t.Errorf("pool %s: endpoint host %q is not a sim service (%v)", p.Name, host, sims)
			continue
		}
		if c, ok := clouds[host]; ok && c != p.Cloud {
			t.Errorf("sim %s serves pools of two clouds: %s and %s", host, c, p.Cloud)
		}
		clouds[host] = p.Cloud
		endpointPorts[host] = append(endpointPorts[host], port)
		poolsOf[host] = append(poolsOf[host], p.Name)
	}
	var seenClouds []string
	for _, name := range sims {
		s := cf.Services[name]
		f := flagValues(s.Command)
		if host, ok := mountedFile(s, f["config"]); !ok || host != "compose/fleet.yaml" {
			t.Errorf("sim %s: --config %q is not the mounted fleet.yaml", name, f["config"])
		}
		pools := strings.Split(f["pools"], ",")
		sort.Strings(pools)
		want := slices.Sorted(slices.Values(poolsOf[name]))
		if !slices.Equal(pools, want) {
			t.Errorf("sim %s: --pools %v, but fleet.yaml points pools %v at it", name, pools, want)
		}
		cp, err := portOf(f["control-listen"])
		if err != nil || !strings.HasPrefix(f["control-listen"], "0.0.0.0:") {
			t.Errorf("sim %s: --control-listen %q: want 0.0.0.0:PORT", name, f["control-listen"])
		}
		wantExpose := append(slices.Clone(endpointPorts[name]), strconv.Itoa(cp))
		sort.Strings(wantExpose)
		expose := slices.Sorted(slices.Values(s.Expose))
		if !slices.Equal(expose, wantExpose) {
			t.Errorf("sim %s: expose %v, want the pool ports plus control %v", name, expose, wantExpose)
		}
		for _, p := range s.Ports {
			if !slices.Contains(s.Expose, containerPort(p)) {
				t.Errorf("sim %s: publishes %q, which it does not serve", name, p)
			}
		}
		if hc := strings.Join(s.Healthcheck.Test, " "); !strings.Contains(hc, fmt.Sprintf(":%d", cp)) {
			t.Errorf("sim %s: healthcheck %q does not probe the control port %d", name, hc, cp)
		}
		seenClouds = append(seenClouds, clouds[name])
	}
	sort.Strings(seenClouds)
	if !slices.Equal(seenClouds, []string{"aws", "azure", "gcp"}) {
		t.Errorf("sims stand in for clouds %v, want one each for aws, azure, gcp", seenClouds)
	}
}

// ---------------------------------------------------------------- Dockerfile

// TestDockerfile checks the Dockerfile's shape; the build itself is
// TestImageBuildWithoutDocker.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("docker/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	for _, want := range []string{
		"ARG GO_VERSION=" + string(m[1]) + "\n", // builder matches go.mod's Go
		"golang:${GO_VERSION}@${GO_IMAGE_DIGEST} AS build",
		"--mount=type=cache,target=/go/pkg/mod",
		"--mount=type=cache,target=/root/.cache/go-build",
		"sh deploy/docker/go-build.sh /out",
		"FROM gcr.io/distroless/static-debian12:nonroot@${RUNTIME_IMAGE_DIGEST} AS runtime\n",
		"USER 65532:65532\n",
		"EXPOSE 50051 9464 8080\n",
		`ENTRYPOINT ["/usr/local/bin/switchyard"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	// Every external base image is pinned by a digest ARG without a default
	// (build.sh checks the values); stages built FROM a local stage are fine.
	stages := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^FROM (?:--platform=\S+ )?(\S+)(?: AS (\S+))?`).FindAllStringSubmatch(df, -1) {
		img, name := m[1], m[2]
		if !stages[img] && !regexp.MustCompile(`@\$\{[A-Z_]+_DIGEST\}$`).MatchString(img) {
			t.Errorf("FROM %s: base image not pinned by a digest ARG", img)
		}
		stages[name] = true
	}
	for _, arg := range regexp.MustCompile(`@\$\{([A-Z_]+_DIGEST)\}`).FindAllStringSubmatch(df, -1) {
		if regexp.MustCompile(`(?m)^ARG ` + arg[1] + `=`).MatchString(df) {
			t.Errorf("ARG %s has a default: a build must name the digest", arg[1])
		}
	}
	// The router image (the last stage, the default target) carries no
	// simulator and no load tester; the tools stage does.
	last := df[strings.LastIndex(df, "\nFROM "):]
	if !strings.HasPrefix(last, "\nFROM runtime AS router") {
		t.Errorf("the last stage is %q, want the router", strings.SplitN(last, "\n", 3)[1])
	}
	routerCopy := regexp.MustCompile(`COPY --from=build (.*) /usr/local/bin/`).FindStringSubmatch(last)
	if routerCopy == nil || !strings.Contains(routerCopy[1], "/out/switchyard ") || strings.Contains(routerCopy[1], "switchyard-sim") ||
		strings.Contains(routerCopy[1], "switchyard-load") || strings.Contains(routerCopy[1], "/out/ ") {
		t.Errorf("router image copies %v: want switchyard and switchyardctl, no simulator or load tester", routerCopy)
	}
	if !strings.Contains(df, "FROM runtime AS tools") || !strings.Contains(df, "/out/switchyard-sim /out/switchyard-load") {
		t.Errorf("no tools stage with the simulator and the load tester")
	}
	if strings.Contains(stripComments(df), "go build") {
		t.Errorf("Dockerfile runs go build itself; keep the command line in go-build.sh so build-check.sh runs the same")
	}
	di, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".git", "bin/"} {
		if !slices.Contains(strings.Split(string(di), "\n"), want) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
	for _, must := range []string{"deploy/docker", "go.mod", "go.sum", "cmd/"} {
		for _, l := range strings.Split(string(di), "\n") {
			if l != "" && !strings.HasPrefix(l, "#") && strings.HasPrefix(must, strings.TrimSuffix(l, "/")) {
				t.Errorf(".dockerignore line %q excludes %s, which the build needs", l, must)
			}
		}
	}
}

// TestBuildRefusesUnpinnedBaseImages: build.sh refuses to build while a base
// image digest is unset or malformed, before it calls docker (the shipped
// digests.env is empty until someone looks the digests up).
func TestBuildRefusesUnpinnedBaseImages(t *testing.T) {
	digest := "sha256:" + strings.Repeat("a", 64)
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{nil, "GO_IMAGE_DIGEST is unset"},
		{[]string{"GO_IMAGE_DIGEST=" + digest}, "RUNTIME_IMAGE_DIGEST is unset"},
		{[]string{"GO_IMAGE_DIGEST=latest", "RUNTIME_IMAGE_DIGEST=" + digest}, "GO_IMAGE_DIGEST is latest"},
	} {
		cmd := exec.Command("sh", "docker/build.sh", "-t", "x")
		cmd.Env = append(append(os.Environ(), "DIGESTS_FILE=docker/digests.env", "GO_IMAGE_DIGEST=", "RUNTIME_IMAGE_DIGEST="), tc.env...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("build.sh with %v: %v %s, want a refusal naming %q", tc.env, err, out, tc.want)
		}
	}
	b, err := os.ReadFile("docker/digests.env")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"GO_IMAGE_DIGEST", "RUNTIME_IMAGE_DIGEST"} {
		if !strings.Contains(string(b), "\n"+name+"=") {
			t.Errorf("digests.env has no %s line", name)
		}
	}
}

// TestImageBuildWithoutDocker runs deploy/docker/build-check.sh: the exact go
// build command line of the image's builder stage, then checks the binaries
// are static, trimmed and stripped. This is the slow test (a full build).
func TestImageBuildWithoutDocker(t *testing.T) {
	out := t.TempDir()
	cmd := exec.Command("sh", "docker/build-check.sh", out)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("build-check.sh: %v\n%s", err, b)
	}
	t.Logf("%s", b)
}
