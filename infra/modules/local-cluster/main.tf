locals {
  hubs_dir = "${var.data_dir}/hubs"
}

# The local "cluster" is a directory and a port range on this machine. Moving the directory replaces it; changing
# the port range is an in-place update.
resource "terraform_data" "cluster" {
  input = {
    name       = var.name
    data_dir   = var.data_dir
    hubs_dir   = local.hubs_dir
    port_first = var.port_first
    port_last  = var.port_last
  }

  triggers_replace = [var.data_dir]

  lifecycle {
    precondition {
      condition     = var.port_last - var.port_first >= 2
      error_message = "The port range needs at least three ports (each hub takes three)."
    }
  }

  # Paths reach the shell only as environment variables, quoted: interpolated into the command, a path holding
  # "$(...)" or a quote would run as a command.  The hub tree keeps its usual modes whatever Terraform's umask
  # (its state is private, the hubs' directories are set up by the local backend).
  provisioner "local-exec" {
    command = "umask 022 && mkdir -p \"$HUBS_DIR\""
    environment = {
      HUBS_DIR = local.hubs_dir
    }
  }

  # Only empty directories are removed: the console refuses to destroy a cluster that still has hubs.
  provisioner "local-exec" {
    when    = destroy
    command = "rmdir \"$HUBS_DIR\" \"$DATA_DIR\" 2>/dev/null || true"
    environment = {
      HUBS_DIR = self.output.hubs_dir
      DATA_DIR = self.output.data_dir
    }
  }
}
