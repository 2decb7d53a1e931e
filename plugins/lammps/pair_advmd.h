// advmd: pair_style advmd, an exported advmd committee (TorchScript) run through libtorch.
//
//   pair_style advmd committee.pt [strength S] [strength_variable NAME] [virial yes|no]
//   pair_coeff * * H C N O            (element of each atom type)
//   compute unc all pair advmd        (c_unc[1..6]: sigma_E, sigma_F, max deviation, its atom ID,
//                                      bias energy, bias strength; energy/force units of the run)
//
// Units: metal (Angstrom, eV) or real (Angstrom, kcal/mol). Serial runs only (one MPI rank).
#ifndef ADVMD_PAIR_ADVMD_H
#define ADVMD_PAIR_ADVMD_H

#include "pair.h"

#include <torch/script.h>

#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairAdvmd : public Pair {
 public:
  explicit PairAdvmd(class LAMMPS *);
  ~PairAdvmd() override;
  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;

 protected:
  void allocate();
  double strength();

  torch::jit::script::Module module_;
  torch::Dtype dtype_ = torch::kFloat64;
  std::vector<int64_t> type_to_z_;  // index: LAMMPS atom type (1-based)
  std::string model_path_;
  std::string strength_variable_ = "advmd_bias_strength";
  std::string strength_unit_ = "energy";  // "energy" (UDD A), "length" (HAL tau) or "none"
  double default_strength_ = 0.0;
  double cutoff_ = 0.0;
  double energy_unit_ = 1.0;  // LAMMPS energy unit per eV
  bool virial_ = true;
};

}  // namespace LAMMPS_NS

#endif
