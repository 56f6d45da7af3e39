"""Data stage: records files, built-in data sets and the member / non-member split."""
