#include "registry.h"

namespace edgemia {
namespace kernels {

const Registry& AllKernels() {
  static const Registry registry = [] {
    Registry r;
    RegisterConv(r);
    RegisterFullyConnected(r);
    RegisterPooling(r);
    RegisterElementwise(r);
    RegisterLayout(r);
    RegisterActivations(r);
    return r;
  }();
  return registry;
}

}  // namespace kernels

std::vector<std::string> SupportedOps() {
  std::vector<std::string> names;
  for (const auto& entry : kernels::AllKernels()) names.push_back(entry.first);
  return names;
}

std::unique_ptr<Kernel> MakeKernel(const OpSpec& op, const std::vector<Tensor>& tensors, Numerics numerics,
                                   const gemm::Int8Gemm& gemm) {
  const kernels::OpChecker check(op, tensors, gemm);
  const auto& registry = kernels::AllKernels();
  const auto it = registry.find(op.kind);
  if (it == registry.end()) {
    std::string supported;
    for (const auto& entry : registry) supported += (supported.empty() ? "" : ", ") + entry.first;
    check.Unsupported("operator is not supported by the native kernel; supported are " + supported);
  }
  return it->second(check, numerics);
}

}  // namespace edgemia
