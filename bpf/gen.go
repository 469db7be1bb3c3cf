package bpf

// Regenerating needs clang-14 and llvm-strip-14 (the pinned toolchain; other
// versions produce different bytes). CI checks the committed output with
// `go generate ./bpf && git diff --exit-code bpf/`.
//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -type reason syngate syngate.c
