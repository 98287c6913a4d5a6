package main

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// buildStatic builds the real commands with CGO_ENABLED=0, as make build
// does (a link step when the build cache is warm).
func buildStatic(t *testing.T, dir string) (stackcopy, intercept string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds both commands; skipped with -short")
	}
	for _, p := range []string{"stackcopy", "intercept"} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(dir, p), "github.com/stackcopy/stackcopy/cmd/"+p)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", p, err, out)
		}
	}
	return filepath.Join(dir, "stackcopy"), filepath.Join(dir, "intercept")
}

// TestImage builds the image both ways and reads each back: OCI config,
// entrypoint, non-root user, one layer holding both binaries executable,
// passwd naming the user, and reproducible digests.
func TestImage(t *testing.T) {
	dir := t.TempDir()
	sc, ic := buildStatic(t, dir)
	o := Options{Stackcopy: sc, Intercept: ic, Tag: "stackcopy:test", Arch: "amd64", Created: time.Unix(0, 0).UTC()}
	img, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(dir, "image.tar")
	if err := Write(img, o.Tag, tarPath); err != nil {
		t.Fatal(err)
	}
	layoutDir := filepath.Join(dir, "oci")
	if err := Write(img, o.Tag, layoutDir); err != nil {
		t.Fatal(err)
	}

	fromTar, err := tarball.ImageFromPath(tarPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "stackcopy:test" {
		t.Fatalf("layout index: %+v", im.Manifests)
	}
	fromLayout, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]v1.Image{"tarball": fromTar, "layout": fromLayout} {
		t.Run(name, func(t *testing.T) { checkImage(t, got, sc) })
	}

	// Reproducible: the same inputs give the same image digest.
	again, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	dl, _ := fromLayout.Digest()
	if d1 != d2 || d1 != dl {
		t.Errorf("digests differ: %v %v (layout %v)", d1, d2, dl)
	}
	if st, err := os.Stat(tarPath); err == nil {
		t.Logf("image %s: %d bytes (%.1f MiB)", d1, st.Size(), float64(st.Size())/(1<<20))
	}
}

func checkImage(t *testing.T, img v1.Image, stackcopyPath string) {
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/usr/local/bin/stackcopy"}) {
		t.Errorf("entrypoint %q", cf.Config.Entrypoint)
	}
	if cf.Config.User != "65532:65532" {
		t.Errorf("user %q, want the non-root 65532:65532", cf.Config.User)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v (want 1: no base image)", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	want, err := os.ReadFile(stackcopyPath)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
		if h.Name == "usr/local/bin/stackcopy" {
			got, _ := io.ReadAll(tr)
			if string(got) != string(want) {
				t.Error("usr/local/bin/stackcopy differs from the binary built")
			}
		}
	}
	for _, f := range []string{"usr/local/bin/stackcopy", "usr/local/bin/intercept"} {
		h, ok := files[f]
		if !ok || h.Mode&0o111 == 0 || h.Size < 1<<20 {
			t.Errorf("%s missing or not an executable binary: %+v", f, h)
		}
	}
	for _, f := range []string{"etc/passwd", "etc/group", "tmp/", "var/cache/stackcopy/"} {
		if _, ok := files[f]; !ok {
			t.Errorf("%s missing from the layer", f)
		}
	}
	if h := files["var/cache/stackcopy/"]; h != nil && h.Uid != 65532 {
		t.Errorf("spill dir owned by %d, want 65532", h.Uid)
	}
}

func TestRefusesDynamicBinary(t *testing.T) {
	if err := checkStatic("x", []byte("#!/bin/sh\n")); err == nil {
		t.Error("a shell script passed as a static binary")
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	data, err := os.ReadFile(sh)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkStatic(sh, data); err == nil {
		t.Errorf("%s (dynamically linked) passed", sh)
	}
}
