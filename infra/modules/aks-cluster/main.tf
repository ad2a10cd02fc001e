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

  # 0.0.0.0/0 among the ranges admits any address; AKS says so with an empty list of authorized ranges.
  api_authorized_ranges = contains(var.api_authorized_ranges, "0.0.0.0/0") ? [] : var.api_authorized_ranges

  # Microsoft's application that AKS clusters with Entra ID integration take their tokens for (the same in every
  # tenant).
  aks_server_app_id = "6dae42f8-4368-4678-94ff-3960e28e3630"

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
  #checkov:skip=CKV2_AZURE_31:AKS opens the ports of LoadBalancer Services (the hubs' proxies) in the network security group it manages for the nodes; a security group of our own on the subnet would block users from their hubs.
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
  #checkov:skip=CKV_AZURE_4:Container Insights needs a Log Analytics workspace billed per GB ingested, and nothing in hubfleet reads it; the console reads the state it needs from the API server.
  #checkov:skip=CKV_AZURE_115:The console reaches the API server over the internet; api_authorized_ranges limits who can connect and Entra ID authenticates them.
  #checkov:skip=CKV_AZURE_116:The console sets each hub's guardrails itself (ResourceQuota, LimitRange, NetworkPolicy); the Azure Policy add-on would run Gatekeeper's webhooks on the single core node with no policy assigned.
  #checkov:skip=CKV_AZURE_117:Node disks are encrypted at rest with platform-managed keys; customer-managed keys need a Key Vault and a disk encryption set per cluster, and switching an existing cluster to one replaces it.
  #checkov:skip=CKV_AZURE_168:max_pods is left at AKS's default for Azure CNI Overlay (250 pods a node), above the 50 this check asks for; writing it out would rebuild the node pools of clusters that exist.
  #checkov:skip=CKV_AZURE_172:The cluster runs no Secrets Store CSI driver (key_vault_secrets_provider); the hubs' secrets are Kubernetes Secrets, encrypted at rest by AKS.
  #checkov:skip=CKV_AZURE_226:Ephemeral OS disks need a VM size whose local disk holds the OS disk; the wizard's default sizes (Dsv5, Esv5) have no local disk and operators choose the size.
  #checkov:skip=CKV_AZURE_227:Encryption at host needs the EncryptionAtHost feature registered on the subscription, which a new subscription lacks; without it cluster creation fails.
  #checkov:skip=CKV_AZURE_232:The core pool carries the hubs and proxies as well as the system pods on purpose: a separate system pool would add a VM to every cluster.
  name                      = var.name
  location                  = azurerm_resource_group.this.location
  resource_group_name       = azurerm_resource_group.this.name
  dns_prefix                = var.name
  sku_tier                  = "Standard"
  automatic_upgrade_channel = "patch"
  node_os_upgrade_channel   = "NodeImage"
  tags                      = local.tags

  # No local admin account: every caller signs in with Entra ID and Azure RBAC authorizes it (see cluster_admin).
  local_account_disabled = true

  azure_active_directory_role_based_access_control {
    azure_rbac_enabled = true
    tenant_id          = data.azurerm_client_config.current.tenant_id
  }

  api_server_access_profile {
    authorized_ip_ranges = local.api_authorized_ranges
  }

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

# Whoever creates the cluster (the credentials in the environment) becomes its administrator, as on EKS.
resource "azurerm_role_assignment" "cluster_admin" {
  scope                = azurerm_kubernetes_cluster.this.id
  role_definition_name = "Azure Kubernetes Service RBAC Cluster Admin"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "azurerm_kubernetes_cluster_node_pool" "autoscaled" {
  #checkov:skip=CKV_AZURE_168:max_pods is left at AKS's default for Azure CNI Overlay (250 pods a node), above the 50 this check asks for; writing it out would rebuild the node pools of clusters that exist.
  #checkov:skip=CKV_AZURE_227:Encryption at host needs the EncryptionAtHost feature registered on the subscription, which a new subscription lacks; without it node pool creation fails.
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

# -- access -------------------------------------------------------------------------------------------------------

locals {
  context_name = var.name

  # Local accounts are off, so the kubeconfig that AKS issues would sign in interactively. This one authenticates
  # through kubelogin with a service principal from the caller's environment (AZURE_CLIENT_ID and
  # AZURE_CLIENT_SECRET, the same credentials as ARM_CLIENT_ID and ARM_CLIENT_SECRET), so no login is needed.
  kubeconfig = yamlencode({
    apiVersion        = "v1"
    kind              = "Config"
    preferences       = {}
    "current-context" = local.context_name
    clusters = [{
      name = local.context_name
      cluster = {
        server                       = "https://${azurerm_kubernetes_cluster.this.fqdn}:443"
        "certificate-authority-data" = nonsensitive(azurerm_kubernetes_cluster.this.kube_config[0].cluster_ca_certificate)
      }
    }]
    contexts = [{
      name = local.context_name
      context = {
        cluster = local.context_name
        user    = local.context_name
      }
    }]
    users = [{
      name = local.context_name
      user = {
        exec = {
          apiVersion = "client.authentication.k8s.io/v1beta1"
          command    = "kubelogin"
          args = ["get-token", "--login", "spn", "--environment", "AzurePublicCloud",
          "--tenant-id", data.azurerm_client_config.current.tenant_id, "--server-id", local.aks_server_app_id]
          installHint = "Install kubelogin: https://azure.github.io/kubelogin/install.html"
        }
      }
    }]
  })
}

# -- home storage -------------------------------------------------------------------------------------------------

resource "azurerm_storage_account" "home" {
  #checkov:skip=CKV_AZURE_59:The nodes reach the share through a service endpoint, which uses the account's public endpoint; the network rules below deny every network but the node subnet.
  #checkov:skip=CKV_AZURE_206:Premium file shares replicate LRS or ZRS only, ZRS is not offered in every region, and changing the replication of an existing account replaces it with the users' homes.
  #checkov:skip=CKV2_AZURE_1:Encrypted at rest with Microsoft-managed keys; customer-managed keys need a Key Vault per cluster, and the account is only reachable from the node subnet.
  #checkov:skip=CKV2_AZURE_33:The node subnet reaches the account through a service endpoint; a private endpoint would add a private DNS zone and an hourly charge for the same isolation.
  #checkov:skip=CKV2_AZURE_38:This check reads blob soft delete, which a FileStorage account does not have; the home share's soft delete is on (share_properties below).
  #checkov:skip=CKV2_AZURE_40:Terraform's azurerm provider reads the account's properties through its data plane with the shared key; nothing else uses the key (the NFS share takes no key).
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

  # A deleted home share can be restored for a week.
  share_properties {
    retention_policy {
      days = 7
    }
  }

  # The shared key stays for Terraform (see CKV2_AZURE_40); nobody is meant to sign shared access signatures with
  # it, and any that appears expires within a day.
  shared_access_key_enabled = true

  sas_policy {
    expiration_period = "01.00:00:00"
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
