# Credentials and subscription come from the environment (ARM_CLIENT_ID, ARM_CLIENT_SECRET, ARM_TENANT_ID,
# ARM_SUBSCRIPTION_ID), never from variables.
provider "azurerm" {
  features {}
}

data "azurerm_client_config" "current" {}

locals {
  tags = {
    hubfleet-cluster = var.name
    managed-by       = "terraform"
  }

  # AKS's own defaults, written out so that the node subnet and the service range cannot overlap.
  cidr = {
    vnet     = "10.224.0.0/12"
    nodes    = "10.224.0.0/16"
    pods     = "10.244.0.0/16" # overlay: pods do not take addresses from the virtual network
    services = "10.0.0.0/16"
    dns      = "10.0.0.10"
  }

  # Storage account names are global: 3 to 24 lower-case letters and digits. A hash of the subscription and the
  # cluster name keeps the name stable across runs and distinct between subscriptions.
  storage_account_name = "${substr(replace(var.name, "-", ""), 0, 16)}${substr(sha1("${data.azurerm_client_config.current.subscription_id}/${var.name}"), 0, 8)}"

  purpose_label = "hub.jupyter.org/node-purpose"
  user_taint    = "hub.jupyter.org/dedicated=user:NoSchedule"
  gpu_taint     = "nvidia.com/gpu=present:NoSchedule"

  # The core pool is the cluster's default (system) pool; these are the autoscaled user pools.
  autoscaled_pools = merge(
    {
      user = {
        vm_size   = var.user_machine_type
        min_count = var.user_min_nodes
        max_count = var.user_max_nodes
        taints    = [local.user_taint]
      }
    },
    var.gpu_enabled ? {
      gpu = {
        vm_size   = var.gpu_machine_type
        min_count = 0
        max_count = var.gpu_max_nodes
        taints    = [local.gpu_taint]
      }
    } : {},
  )
}

resource "azurerm_resource_group" "this" {
  name     = "${var.name}-rg"
  location = var.region
  tags     = local.tags
}

# -- network ------------------------------------------------------------------------------------------------------

resource "azurerm_virtual_network" "this" {
  name                = "${var.name}-vnet"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  address_space       = [local.cidr.vnet]
  tags                = local.tags
}

resource "azurerm_subnet" "nodes" {
  name                 = "nodes"
  resource_group_name  = azurerm_resource_group.this.name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = [local.cidr.nodes]

  # Lets the storage account's network rules admit the nodes.
  service_endpoints = ["Microsoft.Storage"]
}

# -- cluster ------------------------------------------------------------------------------------------------------

# A user-assigned identity can be given rights on the subnet before the cluster exists.
resource "azurerm_user_assigned_identity" "cluster" {
  name                = "${var.name}-aks"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

resource "azurerm_role_assignment" "cluster_network" {
  scope                = azurerm_subnet.nodes.id
  role_definition_name = "Network Contributor"
  principal_id         = azurerm_user_assigned_identity.cluster.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_kubernetes_cluster" "this" {
  name                      = var.name
  location                  = azurerm_resource_group.this.location
  resource_group_name       = azurerm_resource_group.this.name
  dns_prefix                = var.name
  sku_tier                  = "Standard"
  automatic_upgrade_channel = "patch"
  node_os_upgrade_channel   = "NodeImage"
  tags                      = local.tags

  default_node_pool {
    name                        = "core"
    temporary_name_for_rotation = "coretmp"
    vm_size                     = var.core_machine_type
    node_count                  = var.core_node_count
    vnet_subnet_id              = azurerm_subnet.nodes.id
    os_disk_size_gb             = 64
    tags                        = local.tags

    node_labels = {
      (local.purpose_label) = "core"
    }

    upgrade_settings {
      max_surge = "10%"
    }
  }

  # Upgrades drain nodes and so stop users' servers: keep them to early Sunday (UTC).
  maintenance_window_auto_upgrade {
    frequency   = "Weekly"
    interval    = 1
    day_of_week = "Sunday"
    start_time  = "02:00"
    utc_offset  = "+00:00"
    duration    = 6
  }

  maintenance_window_node_os {
    frequency   = "Weekly"
    interval    = 1
    day_of_week = "Sunday"
    start_time  = "02:00"
    utc_offset  = "+00:00"
    duration    = 6
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.cluster.id]
  }

  # Azure CNI overlay with Cilium, which enforces the NetworkPolicies that Zero to JupyterHub creates.
  network_profile {
    network_plugin      = "azure"
    network_plugin_mode = "overlay"
    network_policy      = "cilium"
    network_data_plane  = "cilium"
    load_balancer_sku   = "standard"
    pod_cidr            = local.cidr.pods
    service_cidr        = local.cidr.services
    dns_service_ip      = local.cidr.dns
  }

  lifecycle {
    precondition {
      condition     = var.user_min_nodes <= var.user_max_nodes
      error_message = "user_min_nodes (${var.user_min_nodes}) cannot exceed user_max_nodes (${var.user_max_nodes})."
    }

    precondition {
      condition     = !var.gpu_enabled || var.gpu_max_nodes >= 1
      error_message = "A GPU node pool needs gpu_max_nodes of at least 1; set gpu_enabled = false for none."
    }
  }

  depends_on = [azurerm_role_assignment.cluster_network]
}

resource "azurerm_kubernetes_cluster_node_pool" "autoscaled" {
  for_each = local.autoscaled_pools

  name                        = each.key
  temporary_name_for_rotation = "${each.key}tmp"
  kubernetes_cluster_id       = azurerm_kubernetes_cluster.this.id
  mode                        = "User"
  vm_size                     = each.value.vm_size
  vnet_subnet_id              = azurerm_subnet.nodes.id
  os_disk_size_gb             = 128
  auto_scaling_enabled        = true
  min_count                   = each.value.min_count
  max_count                   = each.value.max_count
  node_taints                 = each.value.taints
  tags                        = local.tags

  node_labels = {
    (local.purpose_label) = "user"
  }

  upgrade_settings {
    max_surge = "10%"
  }

  lifecycle {
    # The cluster autoscaler owns the current size.
    ignore_changes = [node_count]
  }
}

# -- home storage -------------------------------------------------------------------------------------------------

resource "azurerm_storage_account" "home" {
  name                            = local.storage_account_name
  location                        = azurerm_resource_group.this.location
  resource_group_name             = azurerm_resource_group.this.name
  account_kind                    = "FileStorage"
  account_tier                    = "Premium"
  account_replication_type        = "LRS"
  min_tls_version                 = "TLS1_2"
  allow_nested_items_to_be_public = false
  tags                            = local.tags

  # NFS shares carry no transport encryption, which Azure only allows with secure transfer off; the network rules
  # below keep the account reachable from the node subnet alone.
  https_traffic_only_enabled = false

  network_rules {
    default_action             = "Deny"
    bypass                     = ["AzureServices"]
    virtual_network_subnet_ids = [azurerm_subnet.nodes.id]
  }
}

# Created through Azure Resource Manager (storage_account_id), so the account's network rules do not lock out
# Terraform itself.
resource "azurerm_storage_share" "home" {
  name               = "home"
  storage_account_id = azurerm_storage_account.home.id
  enabled_protocol   = "NFS"
  quota              = var.home_storage_gb
}
