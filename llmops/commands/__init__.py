"""Commands: one module per CLI command, each with `main(argv) -> int`. Library code returns values
and logs; commands print."""
