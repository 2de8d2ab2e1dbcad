"""Coverage: matched segments -> covered road km per edge, road and H3 cell, and freshness."""
