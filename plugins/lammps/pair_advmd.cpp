// advmd: pair_style advmd (see pair_advmd.h).
#include "pair_advmd.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "input.h"
#include "memory.h"
#include "update.h"
#include "variable.h"

#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <map>

using namespace LAMMPS_NS;

namespace {
// kJ/mol per eV from the exact SI constants, and kcal/mol per eV (as advmd.units)
constexpr double kEvToKjPerMol = 1.602176634e-19 * 6.02214076e23 / 1000.0;
constexpr double kEvToKcalPerMol = kEvToKjPerMol / 4.184;

const std::map<std::string, int64_t> kElements = {
    {"H", 1},  {"He", 2}, {"Li", 3},  {"Be", 4},  {"B", 5},   {"C", 6},   {"N", 7},  {"O", 8},  {"F", 9},
    {"Ne", 10}, {"Na", 11}, {"Mg", 12}, {"Al", 13}, {"Si", 14}, {"P", 15}, {"S", 16}, {"Cl", 17}, {"Ar", 18},
    {"K", 19}, {"Ca", 20}, {"Fe", 26}, {"Cu", 29}, {"Zn", 30}, {"Br", 35}, {"I", 53}};
}  // namespace

PairAdvmd::PairAdvmd(LAMMPS *lmp) : Pair(lmp)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;
  centroidstressflag = CENTROID_NOTAVAIL;
  nextra = 6;
  pvector = new double[nextra];
  for (int k = 0; k < nextra; k++) pvector[k] = 0.0;
}

PairAdvmd::~PairAdvmd()
{
  delete[] pvector;
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

void PairAdvmd::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
}

void PairAdvmd::settings(int narg, char **arg)
{
  if (narg < 1) error->all(FLERR, "pair_style advmd needs the exported committee file: pair_style advmd committee.pt");
  model_path_ = arg[0];
  for (int k = 1; k < narg; k += 2) {
    if (k + 1 >= narg) error->all(FLERR, "pair_style advmd: keyword {} needs a value", arg[k]);
    std::string key = arg[k];
    if (key == "strength") {
      default_strength_ = utils::numeric(FLERR, arg[k + 1], false, lmp);
    } else if (key == "strength_variable") {
      strength_variable_ = arg[k + 1];
    } else if (key == "virial") {
      virial_ = utils::logical(FLERR, arg[k + 1], false, lmp) != 0;
    } else {
      error->all(FLERR, "pair_style advmd: unknown keyword {} (valid: strength, strength_variable, virial)", key);
    }
  }
  try {
    module_ = torch::jit::load(model_path_, torch::kCPU);
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style advmd could not load {}: {}", model_path_, e.what());
  }
  module_.eval();
  // The dtype the committee computes in (advmd.committee.export.model_dtype): its first floating parameter's,
  // else its first floating buffer's (members that keep their weights in buffers), else float32.
  dtype_ = torch::kFloat32;
  bool found = false;
  for (const auto &parameter : module_.parameters()) {
    if (parameter.is_floating_point()) {
      dtype_ = parameter.scalar_type();
      found = true;
      break;
    }
  }
  if (!found) {
    for (const auto &buffer : module_.buffers()) {
      if (buffer.is_floating_point()) {
        dtype_ = buffer.scalar_type();
        break;
      }
    }
  }
  try {
    cutoff_ = module_.attr("cutoff").toDouble();
    strength_unit_ = module_.attr("bias").toModule().attr("strength_unit").toStringRef();
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style advmd: {} is not an advmd committee export (no cutoff/bias): {}", model_path_, e.what());
  }
  std::string style = update->unit_style;
  if (style == "metal")
    energy_unit_ = 1.0;
  else if (style == "real")
    energy_unit_ = kEvToKcalPerMol;
  else
    error->all(FLERR, "pair_style advmd supports units metal (Angstrom, eV) and real (Angstrom, kcal/mol), not {}", style);
}

void PairAdvmd::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  int ntypes = atom->ntypes;
  if (narg != 2 + ntypes)
    error->all(FLERR, "pair_coeff * * for pair_style advmd needs one element per atom type ({} types), got {}", ntypes,
               narg - 2);
  if (std::strcmp(arg[0], "*") != 0 || std::strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_style advmd takes a single pair_coeff * * line");
  std::vector<int64_t> species;
  for (const auto &value : module_.attr("species").toList()) species.push_back(value.get().toInt());
  type_to_z_.assign(ntypes + 1, 0);
  for (int t = 1; t <= ntypes; t++) {
    auto found = kElements.find(arg[1 + t]);
    if (found == kElements.end()) error->all(FLERR, "pair_coeff: unknown element {} for atom type {}", arg[1 + t], t);
    bool known = false;
    for (auto z : species) known = known || (z == found->second);
    if (!known) error->all(FLERR, "pair_coeff: the committee was not trained on element {} (atom type {})", arg[1 + t], t);
    type_to_z_[t] = found->second;
  }
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;
}

void PairAdvmd::init_style()
{
  // the committee finds its own pairs (minimum image for periodic boxes): no LAMMPS neighbor list needed
  if (comm->nprocs > 1)
    error->all(FLERR,
               "pair_style advmd runs on one MPI rank only; under MPI use the fix external route "
               "(advmd.lammps.CommitteeFix), which is MPI-correct");
  if (force->newton_pair == 0) error->all(FLERR, "pair_style advmd requires newton pair on");
}

double PairAdvmd::init_one(int, int) { return cutoff_; }

double PairAdvmd::strength()
{
  double value = default_strength_;
  int index = input->variable->find(strength_variable_.c_str());
  if (index >= 0) value = input->variable->compute_equal(index);
  if (!std::isfinite(value) || value < 0)
    error->all(FLERR, "pair_style advmd: bias strength {} must be finite and >= 0", value);
  return value;
}

void PairAdvmd::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (eflag_atom || vflag_atom || cvflag_atom)
    error->all(FLERR,
               "pair_style advmd gives the total energy and virial only; per-atom energy or virial "
               "(compute pe/atom, stress/atom) would read zero");
  const int nlocal = atom->nlocal;
  double **x = atom->x;
  double **f = atom->f;
  int *type = atom->type;
  tagint *tag = atom->tag;

  const bool periodic = domain->xperiodic && domain->yperiodic && domain->zperiodic;
  if (!periodic && (domain->xperiodic || domain->yperiodic || domain->zperiodic))
    error->all(FLERR, "pair_style advmd supports fully periodic or fully open boxes, not mixed boundaries");

  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  torch::Tensor positions = torch::empty({nlocal, 3}, f64);
  torch::Tensor numbers = torch::empty({nlocal}, torch::TensorOptions().dtype(torch::kInt64));
  auto pos = positions.accessor<double, 2>();
  auto num = numbers.accessor<int64_t, 1>();
  for (int i = 0; i < nlocal; i++) {
    for (int k = 0; k < 3; k++) pos[i][k] = x[i][k];
    num[i] = type_to_z_[type[i]];
  }
  positions = positions.to(dtype_);
  torch::Tensor cell;
  if (periodic) {
    cell = torch::zeros({3, 3}, f64);
    auto c = cell.accessor<double, 2>();
    c[0][0] = domain->xprd;
    c[1][0] = domain->xy;
    c[1][1] = domain->yprd;
    c[2][0] = domain->xz;
    c[2][1] = domain->yz;
    c[2][2] = domain->zprd;
    cell = cell.to(dtype_);
  }
  const double lammps_strength = strength();
  const double model_strength = strength_unit_ == "energy" ? lammps_strength / energy_unit_ : lammps_strength;
  torch::Tensor strength_tensor = torch::full({}, model_strength, torch::TensorOptions().dtype(dtype_));

  const bool strain_virial = periodic && virial_ && vflag_global;
  c10::IValue result;
  double strain_virial_values[6] = {0, 0, 0, 0, 0, 0};
  try {
    if (strain_virial) {
      // W_ab = -dE/d(strain_ab); an upper-triangular strain keeps the cell lower triangular
      torch::Tensor strain = torch::zeros({3, 3}, torch::TensorOptions().dtype(dtype_)).requires_grad_(true);
      torch::Tensor upper = torch::triu(torch::ones({3, 3}, torch::TensorOptions().dtype(dtype_)));
      torch::Tensor deformation = torch::eye(3, torch::TensorOptions().dtype(dtype_)) + strain * upper;
      std::vector<c10::IValue> inputs{positions.matmul(deformation.t()), numbers, cell.matmul(deformation.t()),
                                      strength_tensor, true};
      result = module_.get_method("evaluate")(inputs);
      torch::Tensor energy = result.toGenericDict().at("energy").toTensor();
      torch::Tensor gradient = torch::autograd::grad({energy}, {strain})[0].to(torch::kFloat64);
      auto g = gradient.accessor<double, 2>();
      // Voigt order of LAMMPS: xx, yy, zz, xy, xz, yz
      strain_virial_values[0] = -g[0][0];
      strain_virial_values[1] = -g[1][1];
      strain_virial_values[2] = -g[2][2];
      strain_virial_values[3] = -g[0][1];
      strain_virial_values[4] = -g[0][2];
      strain_virial_values[5] = -g[1][2];
    } else {
      c10::IValue cell_value = periodic ? c10::IValue(cell) : c10::IValue();
      std::vector<c10::IValue> inputs{positions, numbers, cell_value, strength_tensor};
      result = module_.forward(inputs);
    }
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style advmd: the committee failed: {}", e.what());
  }
  auto out = result.toGenericDict();
  const double energy = out.at("energy").toTensor().item<double>();
  torch::Tensor forces = out.at("forces").toTensor().detach().to(torch::kFloat64).contiguous();
  auto force = forces.accessor<double, 2>();
  const double e = energy_unit_;
  for (int i = 0; i < nlocal; i++)
    for (int k = 0; k < 3; k++) f[i][k] += force[i][k] * e;
  if (eflag_global) eng_vdwl += energy * e;
  if (vflag_global) {
    if (strain_virial) {
      for (int k = 0; k < 6; k++) virial[k] += strain_virial_values[k] * e;
    } else if (virial_) {
      for (int i = 0; i < nlocal; i++) {
        virial[0] += x[i][0] * force[i][0] * e;
        virial[1] += x[i][1] * force[i][1] * e;
        virial[2] += x[i][2] * force[i][2] * e;
        virial[3] += x[i][0] * force[i][1] * e;
        virial[4] += x[i][0] * force[i][2] * e;
        virial[5] += x[i][1] * force[i][2] * e;
      }
    }
  }
  const int atom_index = static_cast<int>(out.at("max_deviation_atom").toTensor().item<int64_t>());
  pvector[0] = std::sqrt(std::max(0.0, out.at("sigma_e2").toTensor().item<double>())) * e;
  pvector[1] = std::sqrt(std::max(0.0, out.at("sigma_f2").toTensor().item<double>())) * e;
  pvector[2] = out.at("max_force_deviation").toTensor().item<double>() * e;
  pvector[3] = (atom_index >= 0 && atom_index < nlocal) ? static_cast<double>(tag[atom_index]) : 0.0;
  pvector[4] = out.at("bias_energy").toTensor().item<double>() * e;
  pvector[5] = lammps_strength;
}
