"""What several stages and commands share: datasets on disk, charged DP runs, the audit
trail, the manifest, sign-offs, the release review. Never imports a stage or click."""
