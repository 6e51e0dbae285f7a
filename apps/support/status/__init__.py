"""The pipeline's health at a glance for support staff: /admin/status/ (CONTRACT section 7)."""
