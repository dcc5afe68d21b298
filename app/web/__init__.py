"""Page plumbing shared by every domain's pages: templates, fragments, layout."""
