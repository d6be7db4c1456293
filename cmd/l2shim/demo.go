package main

import (
	"context"
	"io"

	"github.com/l2shim/l2shim/integration"
)

func runDemo(ctx context.Context, w io.Writer, exe string) error {
	return integration.RunDemo(ctx, w, exe)
}
