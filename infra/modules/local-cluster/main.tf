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

  provisioner "local-exec" {
    command = "mkdir -p \"$HUBS_DIR\""
    environment = {
      HUBS_DIR = local.hubs_dir
    }
  }

  # Only empty directories are removed: the console refuses to destroy a cluster that still has hubs.
  provisioner "local-exec" {
    when    = destroy
    command = "rmdir \"${self.output.hubs_dir}\" \"${self.output.data_dir}\" 2>/dev/null || true"
  }
}
