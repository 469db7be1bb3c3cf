package ringport

import "unsafe"

// uintptrOf is the address of b's first byte (b's array, when empty).
func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
