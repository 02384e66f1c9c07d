"""The comparator in three jobs: `runs` (which runs to pair), `stats` (paired statistics and the
verdict) and `render` (tables, Markdown, figures)."""
