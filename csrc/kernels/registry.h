// The table of op kinds the native kernel runs, filled by one Register*
// function per kernel file.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "common.h"

namespace edgemia {
namespace kernels {

using Factory = std::function<std::unique_ptr<Kernel>(const OpChecker&, Numerics)>;
using Registry = std::map<std::string, Factory>;

void RegisterConv(Registry& registry);
void RegisterFullyConnected(Registry& registry);
void RegisterPooling(Registry& registry);
void RegisterElementwise(Registry& registry);
void RegisterLayout(Registry& registry);
void RegisterActivations(Registry& registry);

const Registry& AllKernels();

}  // namespace kernels
}  // namespace edgemia
