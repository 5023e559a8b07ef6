/* abi_offsets.cpp - abi_offsets.c compiled as C++: the layouts a C++ plugin sees. */
#include "abi_offsets.c"
