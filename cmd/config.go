package cmd

// The only file that knows viper. Configuration precedence:
// flag > environment OTS_OTA_<FLAG> > config file > flag default.
// Viper only fills flags the user did not set; commands read their options
// structs, never viper.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

const envPrefix = "OTS_OTA"

// configPath picks the config file: --config (or OTS_OTA_CONFIG), else the XDG
// location, else ./ots-ota.yaml. Missing default files are not an error.
func configPath(explicit string) (path string, required bool) {
	if explicit != "" {
		return explicit, true
	}
	if env := os.Getenv(envPrefix + "_CONFIG"); env != "" {
		return env, true
	}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		dir, _ = os.UserConfigDir()
	}
	if dir != "" {
		p := filepath.Join(dir, "ots-ota", "config.yaml")
		if _, err := os.Stat(p); err == nil {
			return p, false
		}
	}
	return "ots-ota.yaml", false
}

func applyConfig(cmd *cobra.Command, a *app) error {
	v := viper.New()
	path, required := configPath(a.opts.ConfigFile)
	if _, err := os.Stat(path); err == nil || required {
		v.SetConfigFile(path)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return fmt.Errorf("read config %s: %w", path, err)
		}
	}
	v.SetEnvPrefix(envPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()

	var ferr error
	set := func(f *pflag.Flag) {
		// The root's --version is cobra's own switch; `sim --version` is an ordinary option.
		rootVersion := f.Name == "version" && !cmd.HasParent()
		if ferr != nil || f.Changed || f.Name == "config" || f.Name == "help" || rootVersion {
			return
		}
		// A command-scoped key (inspect.max-size) wins over a top-level one (max-size).
		for _, key := range []string{cmd.Name() + "." + f.Name, f.Name} {
			if !v.IsSet(key) {
				continue
			}
			if err := cmd.Flags().Set(f.Name, configValue(v.Get(key))); err != nil {
				ferr = fmt.Errorf("config value for --%s: %w", f.Name, err)
			}
			return
		}
	}
	cmd.Flags().VisitAll(set)
	cmd.InheritedFlags().VisitAll(set)
	return ferr
}

// configValue renders a YAML value as flag text; lists become comma-separated.
func configValue(x any) string {
	switch t := x.(type) {
	case []any:
		parts := make([]string, len(t))
		for i, e := range t {
			parts[i] = fmt.Sprint(e)
		}
		return strings.Join(parts, ",")
	default:
		return fmt.Sprint(t)
	}
}
