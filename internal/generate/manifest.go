package generate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/postkit/postkit/internal/apply"
	"github.com/postkit/postkit/internal/config"
)

// ManifestName is the file, in paths.postkit_run, where generate and apply
// record what they wrote: the SHA-256 of every file, by live path. A live
// file whose contents are not the recorded ones was changed by hand (or
// never written by postkit) and is not replaced without --force.
const ManifestName = "manifest.json"

// ManifestPath is the live path of the manifest.
func ManifestPath(cfg *config.Config) string {
	return path.Join(cfg.Paths.PostkitRun, ManifestName)
}

type manifest struct {
	Comment string            `json:"comment"`
	Files   map[string]string `json:"files"`
}

const manifestComment = "What postkit generate and apply wrote here (SHA-256 by path); a file that no longer matches is not replaced without --force."

// readManifest returns the recorded sums under root; none when there is
// no manifest yet.
func readManifest(root, live string) (map[string]string, error) {
	data, err := os.ReadFile(filepath.Join(root, live))
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("generate: %s is damaged (%v): remove it, then run generate --force once (files changed by hand are kept as FILE.postkit-bak.*)", filepath.Join(root, live), err)
	}
	if m.Files == nil {
		m.Files = map[string]string{}
	}
	return m.Files, nil
}

// manifestFile is the manifest after writing files: what was recorded
// before (files no longer generated keep their entry, so that they are
// still known as postkit's) and the sum of every file now.
func manifestFile(live string, old map[string]string, files []apply.File) apply.File {
	m := manifest{Comment: manifestComment, Files: map[string]string{}}
	for p, s := range old {
		m.Files[p] = s
	}
	for _, f := range files {
		m.Files[f.Path] = apply.Sum(f.Data)
	}
	data, _ := json.MarshalIndent(m, "", "  ")
	return apply.File{Path: live, Data: append(data, '\n'), Mode: 0o644, Unguarded: true}
}
