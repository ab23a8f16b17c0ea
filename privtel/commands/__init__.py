"""One module per command group; each defines `register(subparsers)` and sets
`func` on its parsers to a callable taking the parsed args and returning an exit code."""
