# Sources of the int8 GEMM layer, and the instruction-set flags of its
# per-path files. Shared by the Python extension and the standalone GEMM test
# program (tests/native), so that both compile each path the same way.
#
# A path's file gets its flags only when the target processor can have that
# instruction set; everywhere else it compiles to a stub, and the rest of the
# build stays portable. The flagged files must not instantiate templates that
# other files also instantiate (std::vector members, for instance): the
# linker keeps one copy of each, and it could be the flagged one.

function(edgemia_gemm_sources root out_var)
  set(dir ${root}/csrc/gemm)
  set(sources
    ${dir}/buffers.cc
    ${dir}/dispatch.cc
    ${dir}/gemm_amx.cc
    ${dir}/gemm_avx2.cc
    ${dir}/gemm_avx512vnni.cc
    ${dir}/gemm_neon.cc
    ${dir}/gemm_neondot.cc
    ${dir}/gemm_scalar.cc
    ${dir}/peak.cc)
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|x64)$")
    set_source_files_properties(${dir}/gemm_avx2.cc PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma")
    set_source_files_properties(${dir}/gemm_avx512vnni.cc PROPERTIES
      COMPILE_OPTIONS "-mavx2;-mfma;-mavx512f;-mavx512bw;-mavx512vl;-mavx512vnni")
    set_source_files_properties(${dir}/gemm_amx.cc PROPERTIES
      COMPILE_OPTIONS "-mavx2;-mfma;-mavx512f;-mavx512bw;-mavx512vl;-mavx512vnni;-mamx-tile;-mamx-int8")
  elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
    # Advanced SIMD is part of every AArch64 CPU, so gemm_neon.cc needs no flag.
    set_source_files_properties(${dir}/gemm_neondot.cc PROPERTIES COMPILE_OPTIONS "-march=armv8.2-a+dotprod")
  endif()
  set(${out_var} ${sources} PARENT_SCOPE)
endfunction()
