// advmd: registers pair_style advmd with LAMMPS' plugin loader ("plugin load advmdplugin.so").
#include "lammps.h"
#include "lammpsplugin.h"
#include "pair_advmd.h"

using namespace LAMMPS_NS;

static Pair *create_pair_advmd(LAMMPS *lmp) { return new PairAdvmd(lmp); }

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  auto register_plugin = (lammpsplugin_regfunc) regfunc;
  plugin.version = static_cast<LAMMPS *>(lmp)->version;  // built against this LAMMPS's headers
  plugin.style = "pair";
  plugin.name = "advmd";
  plugin.info = "advmd committee of neural-network potentials with an uncertainty bias (libtorch)";
  plugin.author = "advmd";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &create_pair_advmd;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);
}
